import { runBlobStoreContract, runMetadataStoreContract } from "../../../shared/store_contract.ts";
import { FsBlobStore } from "./fs_blob_store.ts";
import { KvMetadataStore } from "./kv_metadata_store.ts";

runMetadataStoreContract({
  name: "deno kv",
  newStore: async (now) => {
    const kv = await Deno.openKv(":memory:");
    return { store: new KvMetadataStore(kv, now), close: () => kv.close() };
  },
});
runBlobStoreContract({
  name: "files",
  newStore: async () => {
    const dir = await Deno.makeTempDir();
    return { store: new FsBlobStore(`${dir}/blobs`), close: () => Deno.remove(dir, { recursive: true }) };
  },
});
