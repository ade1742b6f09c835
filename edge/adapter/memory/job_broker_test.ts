import { runBrokerContract } from "../../../shared/broker_contract.ts";
import { MemoryJobBroker } from "./job_broker.ts";

runBrokerContract({ name: "memory", newBroker: (o) => ({ broker: new MemoryJobBroker(o) }) });
