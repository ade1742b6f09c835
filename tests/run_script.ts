/**
 * Test support: runs one of the project's scripts as a subprocess from the repository root, as a user's
 * `deno task ...` would, and returns its exit code and output.
 */
export const ROOT = new URL("..", import.meta.url).pathname;

export async function runScript(script: string, args: string[]) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", script, ...args],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}
