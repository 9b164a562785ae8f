"""What a person reads: progress on stderr while it runs, then one table on stdout drawn from the JSON result."""

from __future__ import annotations

import sys
from typing import Any

BUSY_LOAD = 0.5  # 1-minute load average of an idle machine stays well below this


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def render(result: dict[str, Any]) -> str:
    """The table; every number in it is also in the JSON file, measured in the same run."""
    lines = _header(result)
    if result.get("builder"):
        lines += ["", *_builder(result["builder"], result["corpus"])]
    if result.get("latency"):
        lines += ["", *_latency(result["latency"])]
    if result.get("text"):
        lines += ["", *_text(result["text"])]
    if result.get("load"):
        lines += ["", *_load(result["load"])]
    if result.get("switch"):
        lines += ["", *_switch(result["switch"])]
    if result.get("ratelimit"):
        lines += ["", *_ratelimit(result["ratelimit"])]
    if result.get("faiss"):
        lines += ["", *_faiss(result["faiss"], result["model"]["dim"], result["k"])]
    lines += _scale(result)
    if result.get("keywords"):
        lines += ["", *_keywords(result["keywords"])]
    if result.get("relevance"):
        lines += ["", *_relevance(result["relevance"])]
    if result.get("duplicates"):
        lines += ["", *_duplicates(result["duplicates"])]
    for key, title in (("ann_probe", "issue 8's probe: 2000 equal clusters, cosine 0.8, isotropic"),
                       ("ann_hnsw", "HNSW efSearch on clustered embeddings (benchmarks/clustered.py defaults)")):
        if result.get(key):
            lines += ["", *_ef_sweep(result[key], title, result["k"])]
    if result.get("ann"):
        lines += ["", *_ann(result["ann"], result["k"])]
    if result.get("filtered"):
        lines += ["", *_filtered(result["filtered"])]
    if result.get("ocr"):
        lines += ["", *_ocr(result["ocr"])]
    if result.get("runtime"):
        lines += ["", *_runtime(result["runtime"])]
    if result.get("parity"):
        lines += ["", *_parity(result["parity"])]
    if result.get("off_bf16"):
        from benchmarks.off_bf16 import render_off_bf16  # it reports its progress through this module

        lines += ["", *render_off_bf16(result["off_bf16"])]
    if result.get("roofline"):
        from benchmarks.roofline import render_roofline  # it reports its progress through this module

        lines += ["", *render_roofline(result["roofline"])]
    return "\n".join(lines)


def _parity(parity: dict[str, Any]) -> list[str]:
    lines = ["parity: int8 vs fp32 towers, both on ONNX Runtime (benchmarks/parity.py)",
             f"  {'model / eval set':<52} {'P@10 fp32 → int8':>18} {'recall@10 overlap':>18}"]
    for key in ("embedded", "lit"):
        model = parity[key]
        if "left_out" in model:
            lines.append(f"  {model['model']}: left out, {model['left_out']}")
            continue
        for entry in model["evals"]:
            p10 = entry["p10"]
            lines.append(f"  {key + ': ' + entry['name']:<52} {p10['fp32']:>8.3f} → {p10['int8']:<7.3f}"
                         f" {entry['recall10_overlap']:>18.3f}")
    for key, model in parity.items():
        if "left_out" in model:
            continue
        speed = model.get("speed", {}).get("text_ms") or model.get("text_ms")
        lines.append(f"  {key}: text {speed['fp32']} → {speed['int8']} ms; auto serves int8: "
                     f"{model.get('auto_serves_int8', '-')}")
    return lines


def _runtime(models: list[dict[str, Any]]) -> list[str]:
    lines = ["runtime: the service's towers on torch vs ONNX Runtime (fp32, int8), same index (benchmarks/runtime.py)",
             f"  {'model':<34} {'runtime':<9} {'ready s':>8} {'text p50 ms':>12} {'bare p50 ms':>12} "
             f"{'HTTP/bare':>10} {'took ms':>8} {'healthz ms':>10} {'RSS MB':>8}"]
    for model in models:
        name = model["model"].rsplit("/", 1)[-1][:34]
        for runtime in model["ready_s"]:
            lines.append(f"  {name:<34} {runtime:<9} {model['ready_s'][runtime]:>8} "
                         f"{model['http'][runtime]['p50_ms']:>12} {model['bare'][runtime]['p50_ms']:>12} "
                         f"{model['ratio_http_over_bare_p50'][runtime]:>9}x "
                         f"{model['took_p50_ms'][runtime]:>8} {model['healthz_p50_ms'][runtime]:>10} "
                         f"{model['service_memory'][runtime]['rss_mb']:>8}")
        rerank = model["onnx_memory_after_a_rerank"]
        over = model["ratio_over_torch_http_p50"]
        lines.append("  over torch: " + ", ".join(
            f"{runtime} text p50 {over[runtime]}x, RSS {model['ratio_over_torch_rss'][runtime]}x" for runtime in over)
            + f"; export {model['export_s']} s, int8 copy {model['int8_copy_s']} s"
            + (f"; onnx RSS after a re-rank {rerank['rss_mb']} MB" if rerank else ""))
    return lines


def _header(result: dict[str, Any]) -> list[str]:
    model, machine = result.get("model"), result["machine"]
    lines = [f"clipspace benchmark: {model['model']} (pretrained {model['pretrained']}, {model['precision']}, "
             f"{model['device']}, dim {model['dim']}, image size {model['image_size']})" if model else
             "clipspace benchmark: ANN indexes only",
             f"machine: {machine['cpu_model']}, {machine['usable_cores']}/{machine['cores']} cores, torch threads "
             f"{machine['torch_threads']}, native bf16 {'yes' if machine['native_bf16'] else 'no'}, load avg "
             f"{machine['load_avg_start'][0]} at start, {machine['load_avg_end'][0]} at end",
             f"command: {result['command']}"]
    if result.get("note"):
        lines.append(f"note: {result['note']}")
    if machine["load_avg_start"][0] > BUSY_LOAD:
        lines.append(f"warning: load average {machine['load_avg_start'][0]} before the run: something else was using "
                     "the CPU, so these numbers are contended, not a baseline")
    return lines


def _builder(builder: dict[str, Any], corpus: dict[str, Any]) -> list[str]:
    size = "x".join(map(str, corpus["image_size"])) if corpus["image_size"] else "as found"
    origin = "generated" if corpus["generated"] else corpus["root"]
    verdict = "ok" if builder["draft_cosine_ok"] else "BELOW 0.999"
    return [
        f"1. Builder: {corpus['count']} JPEGs ({origin}, {size}, {corpus['mean_kb']} kB mean), "
        f"batch {builder['batch_size']}, {builder['workers']} decode workers",
        _row("end to end, jpeg draft on (build_index, fresh index)", f"{builder['end_to_end_per_s']:.1f} img/s"),
        _row("end to end, jpeg draft off", f"{builder['end_to_end_no_draft_per_s']:.1f} img/s"),
        _row("raw forward (embed_pixels, same batch size)", f"{builder['raw_forward_per_s']:.1f} img/s"),
        _row(f"decode + preprocess only ({builder['workers']} threads, draft on)",
             f"{builder['decode_only_per_s']:.1f} img/s"),
        _row("ratio end to end / raw forward", f"{builder['ratio_end_to_end_over_raw']:.3f}"),
        _row("jpeg draft speed-up (on / off, end to end)", f"{builder['draft_speedup']:.2f}x"),
        _row("cosine draft vs full decode (min / mean)",
             f"{builder['draft_cosine_min']:.5f} / {builder['draft_cosine_mean']:.5f} {verdict}"),
    ]


def _latency(latency: dict[str, Any]) -> list[str]:
    def timing(label: str, summary: dict[str, float]) -> str:
        return _row(label, f"p50 {summary['p50_ms']:8.2f} ms   p95 {summary['p95_ms']:8.2f} ms")

    lines = [f"2. Text query latency: {latency['queries']} sequential queries after warm-up, k={latency['k']}, "
             "bare and HTTP in alternating blocks",
             timing("HTTP POST /search/text (client side, as wrk times it)", latency["http"]),
             timing("  of which the service's took_ms (embed + search)", latency["http_server_took"]),
             *([timing("  the same through http.client (its own cost included)", latency["http_stdlib"])]
               if "http_stdlib" in latency else []),
             timing("  the same queries through httpx (its own cost included)", latency["http_httpx"]),
             timing("bare encoder.embed_texts([q]) in process", latency["bare_embed"]),
             timing("GET /healthz from the same client (HTTP floor)", latency["http_floor"]),
             _row("ratio HTTP / bare (p50)", f"{latency['ratio_http_over_bare_p50']:.2f}x"),
             _row("  the same within each pair of alternating blocks",
                  " ".join(f"{ratio:.2f}x" for ratio in latency.get("ratio_http_over_bare_by_round", []))),
             _row("ratio took_ms / bare (p50)", f"{latency['ratio_took_over_bare_p50']:.2f}x"),
             _row("sequential throughput", f"{latency['sequential_per_s']:.1f} queries/s"),
             _row("service memory after the queries", _memory(latency["service_memory"]))]
    concurrent = latency.get("concurrent")
    if concurrent:
        lines += [timing(f"{latency['concurrency']} concurrent clients", concurrent),
                  _row(f"{latency['concurrency']} concurrent clients throughput",
                       f"{concurrent['queries_per_s']:.1f} queries/s "
                       f"({concurrent['speedup_over_sequential']:.2f}x sequential)")]
    return lines


def _text(text: dict[str, Any]) -> list[str]:
    return ["3. Text cost, trimmed to the longest text of each batch vs open_clip's full context",
            _row(f"{text['captions']} captions ({text['caption_words_mean']} words mean), trimmed",
                 f"{text['captions_trimmed_s']:.2f} s"),
            _row("  the same, full context (before trimming)", f"{text['captions_full_s']:.2f} s"),
            _row("  speed-up / cosine min", f"{text['captions_speedup']:.2f}x / {text['captions_cosine_min']:.6f}"),
            _row("one query, trimmed (p50)", f"{text['query_trimmed']['p50_ms']:.2f} ms"),
            _row("one query, full context (p50)", f"{text['query_full']['p50_ms']:.2f} ms"),
            _row("  speed-up (p50)", f"{text['query_speedup_p50']:.2f}x")]


def _load(load: dict[str, Any]) -> list[str]:
    verdict = "ok" if load["rss_growth_ok"] else "ABOVE 10%"
    lines = [f"4. Load: {load['clients']} clients for {load['seconds']:.0f} s, mixing {', '.join(load['kinds'])}",
             _row("requests / errors", f"{load['requests']} / {load['errors']}"),
             _row("throughput", f"{load['queries_per_s']:.1f} queries/s"),
             _row("latency, all kinds", f"p50 {load['latency_ms'].get('p50_ms', 0):8.2f} ms   "
                                        f"p99 {load['latency_ms'].get('p99_ms', 0):8.2f} ms")]
    for kind, summary in load["by_kind"].items():
        lines.append(_row(f"  {kind} ({summary['n']})", f"p50 {summary.get('p50_ms', 0):8.2f} ms   "
                                                         f"p99 {summary.get('p99_ms', 0):8.2f} ms"))
    lines += [_row("service memory after warm-up", _memory(load["memory_before"])),
              _row("service memory at the end", _memory(load["memory_after"])),
              _row("RSS growth", f"{load['rss_growth'] * 100:+.1f}% {verdict}")]
    lines += [f"  error: {sample}" for sample in load["error_samples"]]
    return lines


def _switch(switch: dict[str, Any]) -> list[str]:
    old, new = switch["models"].values()
    goals = "all goals met" if switch["goals_met"] else "GOALS MISSED"
    lines = [f"Model switch under load: {switch['clients']} clients ({', '.join(switch['kinds'])}) while {new} is "
             f"built into the folder serving {old} ({goals}: 0 errors, no mix, peak <= 2x one model)",
             _row("requests / errors during the switch", f"{switch['requests']} / {switch['errors']}"),
             _row("answers by version", ", ".join(f"{v}: {n}" for v, n in switch["answers_by_version"].items())),
             _row("published / first new answer / last old answer",
                  f"{switch['published_s']:.1f} s / {switch['first_new_s']:.1f} s / {switch['last_old_s']:.1f} s"),
             _row("mixed answers (wrong model, or old after new)", str(switch["mixed"])),
             _row("service memory, the old model alone", _memory(switch["memory_old"])),
             _row("service memory, the new model alone", _memory(switch["memory_new"])),
             _row("peak RSS during the switch", f"{switch['switch_peak_rss_mb']:.0f} MB, "
                                                f"{switch['peak_ratio']:.2f}x the new model alone")]
    return lines + [f"  error: {sample}" for sample in switch["error_samples"]]


def _ratelimit(rate: dict[str, Any]) -> list[str]:
    verdict = "ok" if rate["p99_ratio_ok"] else "ABOVE 1.2x"
    alone, control, hammered = rate["quiet_alone_ms"], rate["quiet_control_ms"], rate["quiet_hammered_ms"]
    return [f"Rate-limit isolation: {rate['quiet_keys']} keys at {rate['quiet_per_key_per_s']:g} text queries/s each, "
            f"alone and beside a key sending {rate['hammer_offered_per_s']}/s on {rate['hammer_connections']} "
            f"connections past {rate['rate_limit']} "
            f"({rate['rounds']} rounds of {rate['phase_seconds']:.0f} s)",
            _row(f"quiet keys alone ({alone['n']})", f"p50 {alone['p50_ms']:8.2f} ms   p99 {alone['p99_ms']:8.2f} ms"),
            _row(f"quiet keys, hammer aimed at a stub ({control['n']})",
                 f"p50 {control['p50_ms']:8.2f} ms   p99 {control['p99_ms']:8.2f} ms"),
            _row(f"quiet keys hammered ({hammered['n']})",
                 f"p50 {hammered['p50_ms']:8.2f} ms   p99 {hammered['p99_ms']:8.2f} ms"),
            _row("p99 hammered / alone", f"{rate['p99_ratio']:.3f}x {verdict}"),
            _row("p99 hammered / stub (the service's share)", f"{rate['p99_ratio_to_control']:.3f}x"),
            _row("quiet errors", str(rate["quiet_errors"])),
            _row("hammer answers", f"{rate['hammer_per_s']:.0f}/s: " + ", ".join(
                f"{status} x{count}" for status, count in rate["hammer_answers"].items())),
            _row("service CPU alone / stub / hammered",
                 " / ".join(f"{cpu:.2f} s/s" for cpu in rate["service_cpu_per_s"].values())),
            _row("  per hammer request", f"{rate['service_cpu_us_per_hammer_request']:.0f} µs")]


def _memory(memory: dict[str, float]) -> str:
    return (f"RSS {memory['rss_mb']:.0f} MB (private {memory['anon_mb']:.0f}, files {memory['file_mb']:.0f}, "
            f"peak {memory['peak_rss_mb']:.0f})")


def _faiss(results: list[dict[str, Any]], dim: int, k: int) -> list[str]:
    lines = [f"5. FAISS search: random unit vectors, dim {dim}, k={k}, one query per call (p50 / p95 ms)",
             f"  {'vectors':>9}  {'index':<12} {'write s':>8}  {'IndexVersion.search':>21}  {'raw faiss':>17}  "
             f"{'recall@k':>8}"]
    for result in results:
        version, raw = result["index_version_search"], result["raw_faiss_search"]
        lines.append(f"  {result['size']:>9,}  {result['factory']:<12} {result['write_seconds']:>8.2f}  "
                     f"{version['p50_ms']:>10.3f} / {version['p95_ms']:<8.3f}  "
                     f"{raw['p50_ms']:>7.3f} / {raw['p95_ms']:<7.3f}  {result['recall_at_k']:>8.4f}")
    return lines


def _scale(result: dict[str, Any]) -> list[str]:
    lines = []
    if result.get("reindex"):
        r = result["reindex"]
        verdict = "ok" if r["changed_s"] <= r["changed_budget_s"] else "OVER"
        lines += ["", f"6. Reindex in proportion to change: {r['files']:,} tiny JPEGs, embedded model, "
                      f"load avg {r['load_avg'][0]}",
                  _row("first build", f"{r['first_build_s']:.2f} s ({r['embedded_per_s']:.0f} img/s embedded)"),
                  _row("no-change reindex (goal <= 30 s on 2 cores)", f"{r['no_change_s']:.2f} s"),
                  _row(f"{r['changed']:,} files changed ({r['changed_read']:,} read)", f"{r['changed_s']:.2f} s"),
                  _row("goal: 2 x no-change + embedding the changed files", f"{r['changed_budget_s']:.2f} s {verdict}")]
    for memory in result.get("memory", []):
        sizes = " / ".join(f"{size:,}" for size in memory["sizes"])
        peaks = " / ".join(f"{peak:.0f}" for peak in memory["peak_rss_mb"])
        lines += ["" if memory["builder"] == "local" else None,
                  f"7. Builder peak RSS ({memory['builder']}), {sizes} images: {peaks} MB, "
                  f"slope {memory['bytes_per_image']:.0f} B/image (load avg {memory['load_avg'][0]})"]
    if result.get("ray"):
        r = result["ray"]
        verdict = "ok" if r["overhead"] <= 0.15 else "OVER 15%"
        lines += ["", f"8. Ray (local cluster on this machine) against the local builder, {r['files']:,} images of "
                      f"the run's corpus, {r['model']} (load avg {r['load_avg'][0]})",
                  _row("local / ray", f"{r['local_s']:.2f} s / {r['ray_s']:.2f} s"),
                  _row("overhead (goal <= 15%)", f"{r['overhead']:.1%} {verdict}")]
    lines += [f"Ray section failed: {result[key]}" for key in ("memory_ray_error", "ray_error") if result.get(key)]
    return [line for line in lines if line is not None]


def _duplicates(section: dict[str, Any]) -> list[str]:
    lines = [f"Duplicates (issue 22): {section['images']:,} generated images, {section['families']:,} families, "
             f"{section['lookalike_families']:,} look-alike families, {section['confusable_families']:,} confusable "
             "(other background); pairwise precision / recall (goals: >= 0.95 / >= 0.9), precision on pairs with a "
             f"confusable (goal >= 0.95); the service groups at cosine {section['default_threshold']} confirmed by "
             f"a colour layout within {section['layout_tolerance']}",
             f"  {'method':14} {'threshold':>9} {'precision':>9} {'recall':>7} {'pairs':>7} {'confusables':>11} "
             f"{'look-alikes joined':>18}  recall per transform"]
    for row in section["table"]:
        shown = f"<= {row['threshold']} bits" if row["method"] == "phash" else f"{row['threshold']}"
        per = " ".join(f"{kind[:6]} {value:.2f}" for kind, value in row["recall_by_transform"].items())
        lines.append(f"  {row['method']:14} {shown:>9} {row['precision']:9.3f} {row['recall']:7.3f} "
                     f"{row['predicted_pairs']:7,} {row['confusable_precision']:11.3f} "
                     f"{row['lookalikes_joined']:18,}  {per}")
    timing = section.get("grouping_time")
    if timing:
        lines.append(f"  grouping {timing['vectors']:,} vectors of dim {timing['dim']}: {timing['seconds']} s, "
                     f"{timing['seconds_with_layouts']} s with layouts confirming each pair (goal <= 60 s on 2 "
                     f"cores), {timing['copies_grouped']:.3f} of the planted copies grouped")
    return lines


def _keywords(keywords: dict[str, Any]) -> list[str]:
    kinds = list(keywords["methods"][0]["mrr"])
    shipped = keywords["shipped"]
    lines = [f"12. Keyword channel (issue 19): {keywords['corpora']} generated corpora of {keywords['items']:,} world "
             f"scenes, {keywords['queries_per_kind']} queries per kind, MRR@{keywords['depth']} pooled (per corpus "
             f"in the JSON); p50 of channels.find, one thread, text embedding excluded; {keywords['model']} "
             f"{keywords['precision']}; "
             f"shipped: RRF_K={shipped['RRF_K']}, VECTOR_WEIGHT={shipped['VECTOR_WEIGHT']}",
             f"  {'mode':<20}" + "".join(f"{kind:>20}" for kind in kinds) + f"{'p50 ms':>9}"]
    for entry in keywords["methods"]:
        lines.append(f"  {entry['method']:<20}" + "".join(f"{entry['mrr'][kind]:>20.3f}" for kind in kinds)
                     + f"{entry['p50_ms']:>9.3f}")
    lines.append(f"  {'better channel':<20}" + "".join(f"{keywords['better_channel'][kind]:>20.3f}" for kind in kinds))
    for label, gap in keywords["gaps"].items():
        verdict = "ok" if min(gap.values()) >= -keywords["goal_gap"] else "MISSES"
        lines.append(f"  {'gap ' + label:<20}" + "".join(f"{gap[kind]:>+20.3f}" for kind in kinds)
                     + f"  {verdict}")
    return lines


def _ef_sweep(rows: list[dict[str, Any]], title: str, k: int) -> list[str]:
    lines = [f"9. {title}: {rows[0]['size']:,} vectors, k={k}, one thread, raw FAISS (load avg {rows[-1]['load_avg']})",
             f"  {'index':<12} {'efSearch':>8}  {'recall@k':>8}  {'p50 ms':>8}  {'p95 ms':>8}"]
    for row in rows:
        lines.append(f"  {row['factory']:<12} {row['efSearch'] or '-':>8}  {row['recall_at_k']:>8.4f}  "
                     f"{row['p50_ms']:>8.3f}  {row['p95_ms']:>8.3f}")
    return lines


def _ann(ann: dict[str, Any], k: int) -> list[str]:
    built = f"built in {ann['build_seconds']} s" if ann["build_seconds"] is not None else "from the cache"
    version, exact = ann["version_search"], ann["exact_search"]
    return [f"10. The index auto picks at {ann['size']:,} clustered vectors of dim {ann['dim']}: {ann['factory']} "
            f"({built}), search params {ann['search_params']}, load avg {ann['load_avg']}",
            _row(f"recall@{k} (IndexVersion.search against brute force)", f"{ann['recall_at_k']:.4f}"),
            _row("IndexVersion.search, one thread, fresh process",
                 f"p50 {version['p50_ms']:8.3f} ms   p95 {version['p95_ms']:8.3f} ms"),
            _row("  the same calls in CPU time of the searching thread", _p50_p95(ann["version_search_cpu"])),
            _row("exact brute force (numpy, one thread, fresh process)", _p50_p95(exact)),
            _row("  the same calls in CPU time", _p50_p95(ann["exact_search_cpu"])),
            _row("speed-up over brute force (p50)", f"{exact['p50_ms'] / max(version['p50_ms'], 1e-9):.1f}x"),
            _row("raw vectors", f"{ann['vectors_bytes'] / 2**20:.0f} MiB"),
            _row("searching process: peak RSS (anonymous + file pages now)",
                 f"{ann['peak_rss_bytes'] / 2**20:.0f} MiB ({ann['rss_anon_bytes'] / 2**20:.0f} + "
                 f"{ann['rss_file_bytes'] / 2**20:.0f} MiB)"),
            _row("peak RSS / raw vectors", f"{ann['peak_rss_bytes'] / ann['vectors_bytes']:.2f}")]


def _filtered(filtered: dict[str, Any]) -> list[str]:
    built = f"built in {filtered['build_seconds']} s" if filtered["build_seconds"] is not None else "from the cache"
    lines = [f"11. Filtered search at {filtered['size']:,} clustered vectors of dim {filtered['dim']}: "
             f"{filtered['factory']} ({built}), search params {filtered['search_params']}, exact scan up to "
             f"{filtered['exact_scan_floats']:,} floats; {filtered['queries']} queries, k={filtered['k']}, one thread; "
             f"post-filter = the unfiltered top {filtered['post_filter_depth']:,} cut to the selection",
             f"  {'kept':>6} {'rows':>9}  {'method':<12} {'plan':<28} {'all match':>9} {'recall@k':>8} "
             f"{'short':>6} {'p50 ms':>8} {'p95 ms':>8}"]
    for entry in filtered["selectivities"]:
        plan = entry["plan"] if isinstance(entry["plan"], str) else ", ".join(
            f"{name} {value}" for name, value in entry["plan"].items())
        for method, label in (("filtered", "in search"), ("post_filter", "post-filter")):
            row = entry[method]
            lines.append(f"  {entry['fraction']:>6.1%} {entry['selected']:>9,}  {label:<12} "
                         f"{plan if method == 'filtered' else '':<28} {'yes' if row['all_match'] else 'NO':>9} "
                         f"{row['recall_at_k']:>8.4f} {row['short_fraction']:>6.1%} {row['p50_ms']:>8.3f} "
                         f"{row['p95_ms']:>8.3f}")
    budget = filtered["exact_scan_at_budget"]
    return [*lines, _row("unfiltered search (every row selected)", _p50_p95(filtered["unfiltered"])),
            _row(f"exact scan at the planner's budget ({budget['rows']:,} random rows)", _p50_p95(budget))]


def _p50_p95(summary: dict[str, float]) -> str:
    return f"p50 {summary['p50_ms']:8.3f} ms   p95 {summary['p95_ms']:8.3f} ms"


def _row(label: str, value: str) -> str:
    return f"  {label:<56} {value}"


def _ocr(result: dict[str, Any]) -> list[str]:
    return [f"OCR on {result['pictures']} rendered pictures ({result['words']} words; goals: recall >= 0.9, "
            "rank 1 >= 90%)",
            f"  word recall {result['word_recall']:.3f} (by kind {_named_shares(result['recall_by_kind'])}; "
            f"by language {_named_shares(result['recall_by_language'])})",
            f"  one-word keyword queries with their picture first: {result['rank1']:.1%} of {result['queries']}",
            f"  OCR {result['ocr_s_per_image']:.3f} s per image (one thread); build {result['build_s']:.1f} s, "
            f"with --ocr {result['build_ocr_s']:.1f} s ({result['slowdown']:.1f}x)",
            *(f"  not read: {miss}" for miss in result["missed"])]


def _named_shares(shares: dict[str, float]) -> str:
    return ", ".join(f"{name} {share:.2f}" for name, share in shares.items())


def _cosines(pairs: dict[str, Any]) -> str:
    return " / ".join(str(pairs.get(key)) for key in ("matches", "others", "share_of_matches"))


def _relevance(bench: dict[str, Any]) -> list[str]:
    fit = bench["calibration"]
    no_captions = bench["no_captions"]
    lines = [f"Calibrated relevance (issue 22): {bench['model']}, {fit['method']} fit on {fit['positives']} matches "
             f"and {fit['negatives']} others; {bench['seconds']} s",
             f"  absent concepts, min_relevance 0.5: {bench['absent_empty_share']:.0%} of "
             f"{len(bench['absent'])} queries answer nothing (goal >= 90%; corpora of {bench['absent_items']})",
             "    best relevance per absent concept: " + ", ".join(
                 f"{text} {value:.2f}" for text, value in bench["absent"].items()),
             "    counts of one shape (not in the goal): " + ", ".join(
                 f"{text} {value:.2f}" for text, value in bench["absent_counts_of_a_shape"].items()),
             f"  present concepts ({bench['present_queries']} on {bench['present_items']} scenes): recall@10 uncut "
             f"{bench['recall_uncut']:.3f}, min_relevance 0.5 {bench['recall_cut']:.3f}, autocut "
             f"{bench['recall_autocut']:.3f} (goal: cut within 0.05 of uncut)",
             f"  autocut on absent counts: keeps {bench['autocut_kept_absent']} of 50 on average",
             f"  calibration error at even odds: concept queries' top 10 {bench['ece_concept_pairs']:.3f}, held-out "
             f"caption pairs {bench['ece_caption_pairs']} (goal <= 0.05); plot {bench['reliability_plot']}",
             f"    concept queries' top 10: {bench['ece_concept_pairs_natural']:.3f} at their own share of matches; "
             f"mean cosine of matches / others / share of matches {_cosines(bench['concept_pairs_cosine'])}"]
    if no_captions:
        lines.append(f"  without captions, {no_captions['model']}: " + ", ".join(
            f"{key} {check['method']} monotone={check['monotone']} bounded={check['bounded']}"
            for key, check in no_captions["maps"].items())
            + f"; 'a star' top 50 relevance {no_captions['a_star_top50_relevance']}")
    return lines
