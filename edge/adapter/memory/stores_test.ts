import { runBlobStoreContract, runMetadataStoreContract } from "../../../shared/store_contract.ts";
import { MemoryBlobStore } from "./blob_store.ts";
import { MemoryMetadataStore } from "./metadata_store.ts";

runMetadataStoreContract({ name: "memory", newStore: (now) => ({ store: new MemoryMetadataStore(now) }) });
runBlobStoreContract({ name: "memory", newStore: () => ({ store: new MemoryBlobStore() }) });
