// Compares UA-only bot detection of ravelin-botscore and the `isbot` npm package on the same
// held-out User-Agents.
//
// Input: the JSON lines written by
//   botscore train --data crates/ravelin-botscore/data -o model.json --holdout-out holdout.jsonl
// one {"ua","source","weight","score"} object per held-out UA, where `score` is ravelin's UA-only
// score (1 = automated .. 99 = human) and `source` is crawler | spoofed | browser.
//
// Usage: node eval.mjs holdout.jsonl [threshold]
// A UA counts as flagged by ravelin when score <= threshold (default 29, the model's default
// likely_automated threshold), and by isbot when isbot(ua) is true.

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { isbot } from "isbot";

const require = createRequire(import.meta.url);
const isbotVersion = require("isbot/package.json").version;

const [path, thresholdArg] = process.argv.slice(2);
if (!path) {
  console.error("usage: node eval.mjs holdout.jsonl [threshold]");
  process.exit(2);
}
const threshold = Number(thresholdArg ?? 29);

const rows = readFileSync(path, "utf8")
  .split("\n")
  .filter((line) => line.trim() !== "")
  .map((line) => JSON.parse(line));

const detectors = {
  "ravelin-botscore": (r) => r.score <= threshold,
  [`isbot ${isbotVersion}`]: (r) => isbot(r.ua),
};

const sources = ["crawler", "spoofed", "browser"];
const fmt = (x) => (Number.isFinite(x) ? x.toFixed(3) : "n/a");

console.log(`held-out UAs: ${rows.length}; ravelin flags score <= ${threshold}\n`);
console.log("| detector | crawler recall | spoofed recall | browser FPR | browser FPR (traffic-weighted) | precision | recall (crawler+spoofed) |");
console.log("|---|---:|---:|---:|---:|---:|---:|");
for (const [name, flags] of Object.entries(detectors)) {
  const share = (source) => {
    const set = rows.filter((r) => r.source === source);
    return set.filter(flags).length / set.length;
  };
  const browsers = rows.filter((r) => r.source === "browser");
  const weighted =
    browsers.filter(flags).reduce((a, r) => a + r.weight, 0) /
    browsers.reduce((a, r) => a + r.weight, 0);
  const bots = rows.filter((r) => r.source !== "browser");
  const tp = bots.filter(flags).length;
  const fp = browsers.filter(flags).length;
  console.log(
    `| ${name} | ${fmt(share("crawler"))} | ${fmt(share("spoofed"))} | ${fmt(share("browser"))} | ${fmt(weighted)} | ${fmt(tp / (tp + fp))} | ${fmt(tp / bots.length)} |`,
  );
}

console.log("\ncounts per source:");
for (const source of sources) {
  console.log(`  ${source}: ${rows.filter((r) => r.source === source).length}`);
}

// Where the two disagree, a few examples of each direction (for the docs' discussion).
const [ours, theirs] = Object.values(detectors);
const onlyOurs = rows.filter((r) => ours(r) && !theirs(r));
const onlyTheirs = rows.filter((r) => !ours(r) && theirs(r));
console.log(`\nflagged only by ravelin: ${onlyOurs.length}; only by isbot: ${onlyTheirs.length}`);
for (const r of onlyOurs.slice(0, 5)) console.log(`  ravelin only [${r.source}, score ${r.score}]: ${r.ua}`);
for (const r of onlyTheirs.slice(0, 5)) console.log(`  isbot only   [${r.source}, score ${r.score}]: ${r.ua}`);
