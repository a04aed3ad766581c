/**
 * `tune download` against a local node:http server on 127.0.0.1 that speaks the hub's
 * protocol for a fake repository: listing, bearer-token auth, Range resume after an
 * interrupted transfer, 401/404 and connection failures.
 */
import { deepStrictEqual as assertEquals, ok as assert, rejects } from "node:assert";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { TuneError } from "../src/errors.ts";
import { downloadRepo } from "../src/hub/models.ts";
import { downloadCommand, parseDownloadArgs } from "../src/hub/download_command.ts";

const TOKEN = "hf_secret";
const FILES: Record<string, Uint8Array> = {
  "config.json": new TextEncoder().encode('{"architectures": ["LlamaForCausalLM"]}'),
  "model.safetensors": Uint8Array.from({ length: 300_000 }, (_, i) => (i * 7 + 3) & 0xff),
  "original/consolidated.00.pth": new Uint8Array(1000).fill(9),
};

interface Log {
  ranges: (string | undefined)[];
  auth: (string | undefined)[];
}

/** Serve the fake repo `org/tiny` (gated: needs TOKEN); `interruptOnce` cuts the first model download in half. */
async function withServer(
  opts: { interruptOnce: boolean },
  fn: (endpoint: string, log: Log) => Promise<void>,
) {
  const log: Log = { ranges: [], auth: [] };
  let interrupted = false;
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url!, "http://x");
    const authed = req.headers.authorization === `Bearer ${TOKEN}`;
    if (url.pathname === "/api/models/org/tiny") {
      if (!authed) return void res.writeHead(401).end("{}");
      res.writeHead(200, { "content-type": "application/json" });
      const siblings = Object.entries(FILES).map(([k, v]) => ({ rfilename: k, size: v.length }));
      return void res.end(JSON.stringify({ id: "org/tiny", siblings }));
    }
    const m = /^\/org\/tiny\/resolve\/main\/(.+)$/.exec(url.pathname);
    const body = m ? FILES[decodeURIComponent(m[1])] : undefined;
    if (!body) return void res.writeHead(404).end("not found");
    log.auth.push(req.headers.authorization);
    if (!authed) return void res.writeHead(401).end();
    const range = req.headers.range;
    if (m![1] === "model.safetensors") log.ranges.push(range);
    const start = range ? Number(/^bytes=(\d+)-$/.exec(range)![1]) : 0;
    const rest = body.subarray(start);
    res.writeHead(range ? 206 : 200, {
      "content-length": String(rest.length),
      ...(range ? { "content-range": `bytes ${start}-${body.length - 1}/${body.length}` } : {}),
    });
    if (opts.interruptOnce && !interrupted && m![1] === "model.safetensors") {
      interrupted = true;
      // Send the first 100,000 bytes, then drop the connection once they are flushed.
      res.write(rest.subarray(0, 100_000), () => res.socket!.destroy());
      return;
    }
    res.end(rest);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address() as AddressInfo;
  try {
    await fn(`http://127.0.0.1:${port}`, log);
  } finally {
    server.closeAllConnections?.();
    await new Promise((r) => server.close(r));
  }
}

async function assertTuneError(p: Promise<unknown>, parts: string[]) {
  await rejects(p, (e: unknown) => {
    assert(e instanceof TuneError, `expected TuneError, got ${e}`);
    const msg = (e as Error).message;
    assert(!msg.includes("\n"), `not one line: ${msg}`);
    for (const s of parts) assert(msg.includes(s), `"${msg}" lacks ${s}`);
    console.log(`  error: ${msg}`);
    return true;
  });
}

Deno.test("downloadRepo() resumes an interrupted file with a Range request and renames it into place", async () => {
  const out = Deno.makeTempDirSync();
  try {
    await withServer({ interruptOnce: true }, async (endpoint, log) => {
      const opts = { outputDir: out, token: TOKEN, endpoint, progress: null };
      await assertTuneError(downloadRepo("org/tiny", opts), [
        "model.safetensors",
        "run the same command again",
      ]);
      const partial = Deno.statSync(join(out, "model.safetensors.incomplete")).size;
      assertEquals(partial, 100_000);
      let missing = false;
      try {
        Deno.statSync(join(out, "model.safetensors"));
      } catch {
        missing = true;
      }
      assert(missing, "no final file may exist after an interrupted download");
      await downloadRepo("org/tiny", opts);
      assertEquals(log.ranges, [undefined, `bytes=${partial}-`]);
      assert(log.auth.every((a) => a === `Bearer ${TOKEN}`));
      for (const [name, body] of Object.entries(FILES)) {
        assertEquals(Deno.readFileSync(join(out, name)), body, name);
      }
      let leftover = true;
      try {
        Deno.statSync(join(out, "model.safetensors.incomplete"));
      } catch {
        leftover = false;
      }
      assert(!leftover, ".incomplete must be renamed away");
      // A third run finds every file complete and downloads nothing.
      const before = log.auth.length;
      await downloadRepo("org/tiny", opts);
      assertEquals(log.auth.length, before);
    });
  } finally {
    Deno.removeSync(out, { recursive: true });
  }
});

Deno.test("downloadRepo() gives one-line errors for 401, 404 and an unreachable hub", async () => {
  const out = Deno.makeTempDirSync();
  try {
    await withServer({ interruptOnce: false }, async (endpoint) => {
      await assertTuneError(
        downloadRepo("org/tiny", { outputDir: out, token: null, endpoint, progress: null }),
        ["401", "org/tiny", "--hf-token"],
      );
      await assertTuneError(
        downloadRepo("org/missing", { outputDir: out, token: TOKEN, endpoint, progress: null }),
        ["404", "org/missing"],
      );
    });
    // A port nothing listens on: bind one, note it, close it.
    const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (l.addr as Deno.NetAddr).port;
    l.close();
    await assertTuneError(
      downloadRepo("org/tiny", {
        outputDir: out,
        token: null,
        endpoint: `http://127.0.0.1:${port}`,
        progress: null,
      }),
      ["cannot reach", "HF_ENDPOINT"],
    );
  } finally {
    Deno.removeSync(out, { recursive: true });
  }
});

Deno.test("downloadCommand() reads --output-dir, --hf-token, HF_ENDPOINT and --ignore-patterns", async () => {
  const out = Deno.makeTempDirSync();
  const old = Deno.env.get("HF_ENDPOINT");
  try {
    await withServer({ interruptOnce: false }, async (endpoint) => {
      Deno.env.set("HF_ENDPOINT", endpoint);
      const code = await downloadCommand([
        "org/tiny",
        "--output-dir",
        out,
        "--hf-token",
        TOKEN,
        "--ignore-patterns",
        "original/*",
      ]);
      assertEquals(code, 0);
      assertEquals(Deno.readFileSync(join(out, "config.json")), FILES["config.json"]);
      let skipped = false;
      try {
        Deno.statSync(join(out, "original"));
      } catch {
        skipped = true;
      }
      assert(skipped, "original/* must be ignored");
    });
  } finally {
    if (old === undefined) Deno.env.delete("HF_ENDPOINT");
    else Deno.env.set("HF_ENDPOINT", old);
    Deno.removeSync(out, { recursive: true });
  }
});

Deno.test("parseDownloadArgs() refuses a missing repo or output dir", () => {
  for (const args of [["--output-dir", "x"], ["org/x"]]) {
    let msg = "";
    try {
      parseDownloadArgs(args);
    } catch (e) {
      msg = (e as Error).message;
    }
    assert(msg.startsWith("tune download: missing"), msg);
  }
});
