import { assert, assertEquals, assertRejects } from "../../gpu-worker/testing.ts";
import { OutgoingError, postOutgoing } from "./outgoing.ts";

/** A loopback server answering with `statuses` in turn (then 204), recording bodies and content types. */
function loopback(statuses: number[] = []) {
  const seen: { type: string; body: string }[] = [];
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, async (req) => {
    seen.push({ type: req.headers.get("content-type") ?? "", body: await req.text() });
    return new Response(null, { status: statuses.shift() ?? 204 });
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}/webhooks/1/token`,
    seen,
    stop: () => server.shutdown(),
  };
}

Deno.test("outgoing: loopback is refused unless allowed, without sending anything", async () => {
  const s = loopback();
  try {
    const e = await assertRejects(
      () => postOutgoing(s.url, "{}", "application/json", { allowPrivate: false }),
      OutgoingError,
    );
    assert(e.message.includes("loopback") && !e.message.includes("token"), e.message);
    const local = await assertRejects(
      () => postOutgoing("http://localhost:9/x", "{}", "application/json", { allowPrivate: false }),
      OutgoingError,
    );
    assert(local.message.includes("loopback"), local.message);
    assertEquals(s.seen.length, 0);
    assertEquals(await postOutgoing(s.url, "{}", "application/json", { allowPrivate: true }), 204);
    assertEquals(s.seen, [{ type: "application/json", body: "{}" }]);
  } finally {
    await s.stop();
  }
});

Deno.test("outgoing: bytes with their content type; 429 and 5xx are retried, other 4xx are not", async () => {
  const s = loopback([503, 429]);
  try {
    const body = new TextEncoder().encode("--b\r\n\r\nx\r\n--b--");
    const o = { allowPrivate: true, retryDelaysMs: [0, 0] };
    assertEquals(await postOutgoing(s.url, body, "multipart/form-data; boundary=b", o), 204);
    assertEquals(s.seen.length, 3);
    assertEquals(s.seen[2].type, "multipart/form-data; boundary=b");
    const refusing = loopback([404, 404, 404]);
    try {
      const e = await assertRejects(
        () => postOutgoing(refusing.url, "{}", "application/json", o),
        OutgoingError,
      );
      assert(e.message.includes("answered 404"), e.message);
      assertEquals(refusing.seen.length, 1);
    } finally {
      await refusing.stop();
    }
  } finally {
    await s.stop();
  }
});
