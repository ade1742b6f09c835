import { runBrokerContract } from "../../../shared/broker_contract.ts";
import { KvJobBroker } from "./kv_job_broker.ts";

runBrokerContract({
  name: "deno kv",
  newBroker: async (o) => {
    const kv = await Deno.openKv(":memory:");
    return { broker: new KvJobBroker(kv, o), close: () => kv.close() };
  },
});
