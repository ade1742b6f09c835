import { assert, assertEquals } from "../../gpu-worker/testing.ts";
import { createEdge } from "../context.ts";
import { checkImageSignature, IMAGE_URL_TTL_S, signedImageUrl } from "./image_urls.ts";

Deno.test("signed image URLs: valid for their tenant and file until they expire", async () => {
  const clock = { t: 1_700_000_000_000 };
  const edge = createEdge({ modelsDir: "/nonexistent", now: () => clock.t });
  const url = new URL(await signedImageUrl(edge, "https://api.example", "tnt_a", "file_1"));
  assertEquals(url.pathname, "/v1/integrations/images/tnt_a/file_1");
  const expires = url.searchParams.get("expires")!, sig = url.searchParams.get("signature")!;
  assertEquals(Number(expires), clock.t / 1000 + IMAGE_URL_TTL_S);
  assert(await checkImageSignature(edge, "tnt_a", "file_1", expires, sig));
  assert(!(await checkImageSignature(edge, "tnt_b", "file_1", expires, sig)), "another tenant");
  assert(!(await checkImageSignature(edge, "tnt_a", "file_2", expires, sig)), "another file");
  assert(!(await checkImageSignature(edge, "tnt_a", "file_1", String(Number(expires) + 1), sig)), "longer");
  assert(!(await checkImageSignature(edge, "tnt_a", "file_1", expires, undefined)), "unsigned");
  clock.t += (IMAGE_URL_TTL_S + 1) * 1000;
  assert(!(await checkImageSignature(edge, "tnt_a", "file_1", expires, sig)), "expired");
  // Another server (another secret) does not accept this server's URLs.
  const other = createEdge({ modelsDir: "/nonexistent", now: () => 1_700_000_000_000 });
  assert(!(await checkImageSignature(other, "tnt_a", "file_1", expires, sig)));
});
