import { assert, assertEquals, assertRejects } from "../../gpu-worker/testing.ts";
import { slackSignature, verifySlackSignature } from "./slack_signature.ts";
import { SignatureError } from "./request_signature.ts";

const enc = (s: string) => new TextEncoder().encode(s);

// Slack's worked example (api.slack.com/authentication/verifying-requests-from-slack).
const SECRET = "8f742231b10e8888abcd99yyyzzz85a5";
const TS = "1531420618";
const BODY =
  "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
const EXPECTED = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
const NOW = Number(TS) * 1000 + 60_000;

const request = (signature: string | null, timestamp: string | null, body = BODY, nowMs = NOW) => ({
  signingSecret: SECRET,
  signature,
  timestamp,
  body: enc(body),
  nowMs,
});

Deno.test("slack signature: Slack's documented example signs and verifies", async () => {
  assertEquals(await slackSignature(SECRET, TS, enc(BODY)), EXPECTED);
  await verifySlackSignature(request(EXPECTED, TS));
});

Deno.test("slack signature: another body, secret or timestamp, and malformed headers are refused", async () => {
  const refused = async (r: ReturnType<typeof request>, includes: string) => {
    const e = await assertRejects(() => verifySlackSignature(r), SignatureError);
    assert(e.message.includes(includes), e.message);
  };
  await refused(request(EXPECTED, TS, BODY + "&x=1"), "does not match");
  await refused({ ...request(EXPECTED, TS), signingSecret: "another" }, "does not match");
  await refused(request(EXPECTED, String(Number(TS) + 1)), "does not match");
  await refused(request(null, TS), "missing the X-Slack-Signature");
  await refused(request(EXPECTED, null), "missing the X-Slack-Request-Timestamp");
  await refused(request("v1=" + EXPECTED.slice(3), TS), 'must be "v0="');
  await refused(request(EXPECTED.toUpperCase(), TS), 'must be "v0="');
});

Deno.test("slack signature: a timestamp over 5 minutes old (a replay) is refused", async () => {
  const e = await assertRejects(
    () => verifySlackSignature(request(EXPECTED, TS, BODY, Number(TS) * 1000 + 301_000)),
    SignatureError,
  );
  assert(e.message.includes("301 s old") && e.message.includes("replayed"), e.message);
});
