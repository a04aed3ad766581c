/**
 * Hugging Face Hub dataset download against a local node:http server on 127.0.0.1 that
 * speaks the hub API (/api/datasets/<repo>/revision/<rev>, /datasets/<repo>/resolve/...)
 * and the datasets-server rows API (/splits, /rows paged by 100). Also: the cache is used
 * without network the second time, HF_TOKEN is sent, and an unreachable endpoint (a closed
 * loopback port) gives the one-line offline message. Tolerance: exact.
 */
import { deepStrictEqual, ok, rejects, strictEqual } from "node:assert";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import "../src/data/components.ts";
import { instantiate } from "../src/config/instantiate.ts";
import { resolveComponent } from "../src/config/resolve.ts";
import {
  alpacaPrompt,
  type DatasetBuilder,
  downloadHubDataset,
  hubOptionsFromEnv,
  loadRows,
  selectDataFiles,
} from "../src/data/mod.ts";
import { TuneError } from "../src/errors.ts";
import { ByteTokenizer } from "./data_byte_tokenizer_test.ts";

const FIX = new URL("./fixtures/data/", import.meta.url).pathname;
const TRAIN_JSONL = Deno.readTextFileSync(`${FIX}alpaca_tiny.jsonl`);
const TEST_JSONL = '{"instruction": "Test row.", "input": "", "output": "ok"}\n';
const PARQUET_ROWS = Array.from({ length: 250 }, (_, i) => ({ id: i, text: `row ${i}` }));

interface FakeHub {
  url: string;
  /** Requests seen, as "METHOD path?query". */
  log: string[];
  close(): Promise<void>;
}

function json(res: ServerResponse, status: number, body: unknown) {
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify(body));
}

function handle(req: IncomingMessage, res: ServerResponse, log: string[]) {
  const u = new URL(req.url ?? "/", "http://127.0.0.1");
  log.push(`${req.method} ${u.pathname}${u.search}`);
  const p = u.pathname;
  if (p === "/api/datasets/test/alpaca-json/revision/main") {
    return json(res, 200, {
      id: "test/alpaca-json",
      siblings: [
        { rfilename: ".gitattributes" },
        { rfilename: "README.md" },
        { rfilename: "dataset_info.json" },
        { rfilename: "data/train.jsonl" },
        { rfilename: "data/test.jsonl" },
      ],
    });
  }
  if (p === "/datasets/test/alpaca-json/resolve/main/data/train.jsonl") return res.end(TRAIN_JSONL);
  if (p === "/datasets/test/alpaca-json/resolve/main/data/test.jsonl") return res.end(TEST_JSONL);
  if (p === "/api/datasets/test/parquet-only/revision/main") {
    return json(res, 200, {
      siblings: [{ rfilename: "README.md" }, { rfilename: "data/train-00000-of-00001.parquet" }],
    });
  }
  if (p === "/splits" && u.searchParams.get("dataset") === "test/parquet-only") {
    return json(res, 200, {
      splits: [{ dataset: "test/parquet-only", config: "default", split: "train" }],
    });
  }
  if (p === "/rows" && u.searchParams.get("dataset") === "test/parquet-only") {
    const offset = Number(u.searchParams.get("offset"));
    const length = Math.min(Number(u.searchParams.get("length")), 100);
    const rows = PARQUET_ROWS.slice(offset, offset + length).map((row, k) => ({
      row_idx: offset + k,
      row,
      truncated_cells: [],
    }));
    return json(res, 200, { rows, num_rows_total: PARQUET_ROWS.length, partial: false });
  }
  if (p === "/api/datasets/test/gated/revision/main") {
    if (req.headers.authorization !== "Bearer hf_secret") return json(res, 401, { error: "gated" });
    return json(res, 200, { siblings: [{ rfilename: "train.json" }] });
  }
  if (p === "/datasets/test/gated/resolve/main/train.json") {
    if (req.headers.authorization !== "Bearer hf_secret") return json(res, 401, { error: "gated" });
    return res.end(JSON.stringify([{ text: "secret" }]));
  }
  json(res, 404, { error: "not found" });
}

async function startHub(): Promise<FakeHub> {
  const log: string[] = [];
  const server: Server = createServer((req, res) => handle(req, res, log));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    log,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections?.();
        server.close(() => r());
      }),
  };
}

async function withHub(fn: (hub: FakeHub, cacheDir: string) => Promise<void>) {
  const hub = await startHub();
  const cacheDir = await Deno.makeTempDir({ prefix: "tune_hf_cache_" });
  try {
    await fn(hub, cacheDir);
  } finally {
    await hub.close();
    await Deno.remove(cacheDir, { recursive: true });
  }
}

Deno.test("`selectDataFiles()` picks a split's JSON/JSONL/CSV files as the hub's patterns do", () => {
  const cleaned = [".gitattributes", "README.md", "alpaca_data_cleaned.json"];
  deepStrictEqual(selectDataFiles(cleaned, "train"), ["alpaca_data_cleaned.json"]);
  deepStrictEqual(selectDataFiles(cleaned, "test"), []);
  const tatsu = ["README.md", "data/train-00000-of-00001-a09b74b3ef9c3b56.parquet"];
  deepStrictEqual(selectDataFiles(tatsu, "train"), []);
  deepStrictEqual(selectDataFiles(tatsu, "train", [".parquet"]), [tatsu[1]]);
  const split = ["train.jsonl", "validation.jsonl", "test.csv", "dataset_infos.json"];
  deepStrictEqual(selectDataFiles(split, "train"), ["train.jsonl"]);
  deepStrictEqual(selectDataFiles(split, "validation"), ["validation.jsonl"]);
  deepStrictEqual(selectDataFiles(["data/a.json", "data/b.json", "eval/c.json"], "train"), [
    "data/a.json",
    "data/b.json",
  ]);
});

Deno.test("`downloadHubDataset()` fetches a split's files once, then reads the cache offline", async () => {
  await withHub(async (hub, cacheDir) => {
    const hubOpts = { endpoint: hub.url, cacheDir, token: null, offline: false };
    const got = await downloadHubDataset("test/alpaca-json", "train", hubOpts);
    strictEqual(got.format, "json");
    deepStrictEqual(got.files, [`${cacheDir}/test--alpaca-json/main/files/data/train.jsonl`]);
    strictEqual(Deno.readTextFileSync(got.files[0]), TRAIN_JSONL);
    deepStrictEqual(hub.log, [
      "GET /api/datasets/test/alpaca-json/revision/main",
      "GET /datasets/test/alpaca-json/resolve/main/data/train.jsonl",
    ]);
    // Second time: served from the cache, no request at all.
    hub.log.length = 0;
    deepStrictEqual(await downloadHubDataset("test/alpaca-json", "train", hubOpts), got);
    deepStrictEqual(hub.log, []);
    // HF_HUB_OFFLINE: the cached split still loads; an uncached one fails without a request.
    hub.log.length = 0;
    deepStrictEqual(
      await downloadHubDataset("test/alpaca-json", "train", { ...hubOpts, offline: true }),
      got,
    );
    await rejects(
      () => downloadHubDataset("test/alpaca-json", "validation", { ...hubOpts, offline: true }),
      /not in the cache .* and HF_HUB_OFFLINE is set; download it and pass `dataset.source=json/,
    );
    deepStrictEqual(hub.log, []);
    // Another split picks its own file.
    const { rows } = await loadRows({ source: "test/alpaca-json", split: "test", hub: hubOpts });
    deepStrictEqual(rows, [{ instruction: "Test row.", input: "", output: "ok" }]);
  });
});

Deno.test("`alpaca_dataset` with a hub source downloads and tokenizes the rows", async () => {
  await withHub(async (hub, cacheDir) => {
    const section = resolveComponent(
      "dataset",
      {
        _component_: "torchtune.datasets.alpaca_dataset",
        source: "test/alpaca-json",
        split: "train[:2]",
      },
      "dataset",
      { recipe: "test", prefix: "" } as never,
    );
    const builder = instantiate<DatasetBuilder>(section);
    const tok = new ByteTokenizer();
    const ds = await builder.load(tok, {
      maxSeqLen: 512,
      hub: { endpoint: hub.url, cacheDir, offline: false },
    });
    strictEqual(ds.source, "test/alpaca-json");
    deepStrictEqual(ds.samples.map((s) => tok.render(s.tokens)), [
      `<s>${alpacaPrompt("Add the numbers.", "2 3")}5</s>`,
      `<s>${alpacaPrompt("Name a primary color.")}Red</s>`,
    ]);
  });
});

Deno.test("`downloadHubDataset()` reads a parquet-only repo through the paged rows API", async () => {
  await withHub(async (hub, cacheDir) => {
    const hubOpts = {
      endpoint: hub.url,
      datasetsServer: hub.url,
      cacheDir,
      token: null,
      offline: false,
    };
    const { rows } = await loadRows({ source: "test/parquet-only", hub: hubOpts });
    deepStrictEqual(rows, PARQUET_ROWS);
    const rowCalls = hub.log.filter((l) => l.startsWith("GET /rows"));
    deepStrictEqual(
      rowCalls.map((l) => new URL(l.slice(4), "http://x").searchParams.get("offset")),
      [
        "0",
        "100",
        "200",
      ],
    );
    ok(
      rowCalls.every((l) =>
        l.includes("config=default") && l.includes("split=train") && l.includes("length=100")
      ),
    );
    strictEqual(hub.log.filter((l) => l.startsWith("GET /splits")).length, 1);
  });
});

Deno.test("`downloadHubDataset()` sends HF_TOKEN and explains a refused gated dataset", async () => {
  await withHub(async (hub, cacheDir) => {
    await rejects(
      () =>
        downloadHubDataset("test/gated", "train", {
          endpoint: hub.url,
          cacheDir,
          token: null,
          offline: false,
        }),
      (e: Error) =>
        e instanceof TuneError && !e.message.includes("\n") &&
        /access to dataset test\/gated was refused .*\(HTTP 401\).*set HF_TOKEN/.test(e.message),
    );
    const prevEndpoint = Deno.env.get("HF_ENDPOINT");
    const prevToken = Deno.env.get("HF_TOKEN");
    Deno.env.set("HF_ENDPOINT", hub.url);
    Deno.env.set("HF_TOKEN", "hf_secret");
    try {
      strictEqual(hubOptionsFromEnv().endpoint, hub.url);
      const { rows } = await loadRows({ source: "test/gated", hub: { cacheDir, offline: false } });
      deepStrictEqual(rows, [{ text: "secret" }]);
    } finally {
      prevEndpoint === undefined
        ? Deno.env.delete("HF_ENDPOINT")
        : Deno.env.set("HF_ENDPOINT", prevEndpoint);
      prevToken === undefined ? Deno.env.delete("HF_TOKEN") : Deno.env.set("HF_TOKEN", prevToken);
    }
    await rejects(
      () =>
        downloadHubDataset("test/missing", "train", {
          endpoint: hub.url,
          cacheDir,
          token: null,
          offline: false,
        }),
      /dataset test\/missing .*was not found on http:\/\/127.0.0.1:\d+ \(HTTP 404\); check dataset.source/,
    );
  });
});

Deno.test("`downloadHubDataset()` fails with one line telling how to use a local copy when offline", async () => {
  // A port that was just bound and released: nothing listens there.
  const probe = createServer();
  await new Promise<void>((r) => probe.listen(0, "127.0.0.1", r));
  const { port } = probe.address() as AddressInfo;
  await new Promise<void>((r) => probe.close(() => r()));
  const cacheDir = await Deno.makeTempDir({ prefix: "tune_hf_cache_" });
  try {
    await rejects(
      () =>
        downloadHubDataset("tatsu-lab/alpaca", "train", {
          endpoint: `http://127.0.0.1:${port}`,
          cacheDir,
          token: null,
          offline: false,
        }),
      (e: Error) => {
        ok(e instanceof TuneError, String(e));
        ok(!e.message.includes("\n"), e.message);
        ok(
          new RegExp(
            `^could not reach http://127.0.0.1:${port} to download dataset tatsu-lab/alpaca \\(.*\\); ` +
              "download it and pass `dataset.source=json dataset.data_files=PATH`$",
          ).test(e.message),
          e.message,
        );
        return true;
      },
    );
  } finally {
    await Deno.remove(cacheDir, { recursive: true });
  }
});

Deno.test("`loadRows()` with a subset reads that config's rows and names the subsets when it is wrong", async () => {
  await withHub(async (hub, cacheDir) => {
    const hub0 = {
      endpoint: hub.url,
      datasetsServer: hub.url,
      cacheDir,
      token: null,
      offline: false,
    };
    const { rows } = await loadRows({ source: "test/parquet-only", subset: "default", hub: hub0 });
    deepStrictEqual(rows, PARQUET_ROWS);
    ok(hub.log.filter((l) => l.startsWith("GET /rows")).every((l) => l.includes("config=default")));
    await rejects(
      loadRows({ source: "test/parquet-only", subset: "wikitext-2", hub: hub0 }),
      (e) =>
        e instanceof TuneError &&
        /has no subset wikitext-2 with split train; its subsets: default; set dataset.subset/
          .test(e.message),
    );
  });
});
