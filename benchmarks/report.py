"""The benchmark's report: one entry per device and --amp in readme/benchmarks.json, all of them as markdown tables in
readme/benchmarks.md."""
from __future__ import annotations

import json
from pathlib import Path

from utils.runtime.fileio import write_json, write_text


def entry_key(entry: dict) -> str:
    """The report's key: the device, and the --amp of the run (each run times float32 too)."""
    amp = entry.get("amp", "none")
    return entry["device"] if amp == "none" else f"{entry['device']}, --amp {amp}"


def markdown(entry: dict) -> str:
    lines = [f"# Benchmark: {entry_key(entry)}", "",
             f"torch {entry['torch']}, {entry['date']}, command `{entry['command']}`. Median of {entry['repeats']} "
             "timed repeats after warm-up.", "",
             f"## Inference per frame (batch 1, every frame a key frame of its "
             f"{entry.get('model', {}).get('num_frame', 5)}-frame window)", "",
             "| S | released (window) ms | ours (stream) ms | speed-up |", "| --- | --- | --- | --- |"]
    for size, row in entry["inference"].items():
        lines.append(f"| {size} | {row['window']:.1f} | {row['stream']:.1f} | {row['window'] / row['stream']:.2f}× |")
        for key in sorted(k for k in row if "_" in k and k.startswith("window_")):
            amp = key.split("_", 1)[1]
            lines.append(f"| {size} {amp} | {row[key]:.1f} | {row['stream_' + amp]:.1f} | "
                         f"{row[key] / row['stream_' + amp]:.2f}× (streaming {amp} vs float32: "
                         f"{row['stream'] / row['stream_' + amp]:.2f}×) |")
    onnx_rows = {size: row for size, row in entry["inference"].items() if "stream_onnx" in row}
    if onnx_rows:
        lines += ["", f"## ONNX Runtime {entry['onnxruntime']} streaming per frame (CPU execution provider, "
                      "as many threads as PyTorch, batch 1)", "",
                  "| S | PyTorch (stream) ms | ONNX Runtime float32 ms | PyTorch / ONNX Runtime | "
                  "ONNX Runtime int8 ms | int8 / float32 speed-up |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for size, row in onnx_rows.items():
            int8 = row.get("stream_onnx_int8")
            lines.append(f"| {size} | {row['stream']:.1f} | {row['stream_onnx']:.1f} | "
                         f"{row['stream'] / row['stream_onnx']:.2f}× | "
                         + (f"{int8:.1f} | {row['stream_onnx'] / int8:.2f}× |" if int8 else "– | – |"))
    if entry.get("limits"):
        lines += limits_section(entry)
    lines += ["", "## Training step (forward, loss, backward, optimizer step)", "",
              "| S | batch | released s | ours s | speed-up |", "| --- | --- | --- | --- | --- |"]
    for size, row in entry["train_step"].items():
        lines.append(f"| {size} | {entry['train_batch']} | {row['released']:.3f} | {row['ours']:.3f} | "
                     f"{row['released'] / row['ours']:.2f}× |")
        for key in sorted(k for k in row if k.startswith("ours_")):
            amp = key.split("_", 1)[1]
            lines.append(f"| {size} {amp} | {entry['train_batch']} | | {row[key]:.3f} | "
                         f"{row['ours'] / row[key]:.2f}× ({amp} vs float32, ours) |")
    variants = entry.get("variants")
    if variants:
        precision = "float32" if variants["amp"] == "none" else variants["amp"]
        lines += ["", f"## Layout and torch.compile at S = {variants['size']} ({precision}, ours)", "",
                  "| channels-last | torch.compile | streaming ms/frame | frames/s | training step s (batch "
                  f"{variants['train_batch']}) |", "| --- | --- | --- | --- | --- |"]
        for row in variants["rows"]:
            layout = "on" if row["channels_last"] else "off"
            if "failed" in row:
                lines.append(f"| {layout} | {row['compile']} | failed | | |")
                continue
            step = "—" if row["train_step_s"] is None else f"{row['train_step_s']:.3f}"
            lines.append(f"| {layout} | {row['compile']} | {row['stream_ms']:.2f} | {1000 / row['stream_ms']:.0f} | "
                         f"{step} |")
    evaluation = entry["evaluation"]
    model = f", {evaluation['model']}" if "model" in evaluation else ""
    lines += ["", f"## The whole pipeline against the model alone at S = {evaluation['size']}{model}", "",
              "| engine | batch | end to end (frames/s) | model alone (frames/s) | share outside the model |",
              "| --- | --- | --- | --- | --- |"]
    for prefix, engine in (("", "vid_map_coco.py, PyTorch float32"), ("int8_", "vid_map_coco.py, ONNX Runtime int8")):
        lines += [f"| {engine} | {batch} | {evaluation[f'{prefix}batch{batch}']:.1f} | "
                  f"{evaluation[f'{prefix}model_batch{batch}']:.1f} | "
                  f"{100 * evaluation[f'{prefix}outside_model_batch{batch}']:.0f} % |"
                  for batch in (1, 8) if f"{prefix}model_batch{batch}" in evaluation]
    video = evaluation.get("video")
    if video is not None:
        lines.append(f"| vid_predict.py --mode video (mp4 of {video['frames']} frames), PyTorch float32 | 8 | "
                     f"{video['end_to_end']:.1f} | {video['model']:.1f} | {100 * video['outside']:.0f} % |")
    lines += ["", "End to end: frame decoding (workers for this machine's CPUs, else read ahead in a thread where "
              "a core is spare), letterbox, model, decoding of the outputs, NMS (and for video: drawing and encoding "
              "the annotated mp4); the model alone runs on the same frames decoded beforehand.",
              f"Frame decoding + letterbox alone: {evaluation['decode_letterbox']:.0f} frames/s.", "",
              "## Model", "", f"- parameters: {entry['params'] / 1e6:.2f} M",
              f"- peak memory: {entry['peak_mem_mb']:.0f} MB "
              f"({'GPU allocated' if 'cuda' in entry['command'] else 'process RSS'})"]
    for size, counts in entry["gflops"].items():
        lines.append(f"- GFLOPs per sample at {size}: eval window (released) {counts['window_released']:.1f}, "
                     f"streaming per frame (ours) {counts['stream_per_frame']:.1f}, training step forward+backward "
                     f"released {counts['train_step_released']:.1f} / ours {counts['train_step_ours']:.1f}")
    lines += ["", "## Equality checks in this run", ""] + [f"- {check}" for check in entry["checks"]]
    return "\n".join(lines) + "\n"


def write_report(entry: dict, out: Path, markdown_path: Path) -> None:
    """Add ``entry`` to the JSON report ``out`` (replacing the entry of the same device and --amp) and rewrite the
    markdown report with every entry measured so far."""
    existing = json.loads(out.read_text()) if out.exists() else {}
    existing[entry_key(entry)] = entry
    write_json(out, existing, indent=2)
    write_text(markdown_path, "\n".join(markdown(existing[name]) for name in sorted(existing)))


# Each engine's time per frame and the precision whose attainable rate bounds it.
ENGINE_PRECISIONS = (("stream", "PyTorch streaming float32", "float32"),
                     ("stream_bf16", "PyTorch streaming bf16", "bf16"),
                     ("stream_onnx", "ONNX Runtime float32", "float32"),
                     ("stream_onnx_int8", "ONNX Runtime int8", "int8"))


def limits_section(entry: dict) -> list[str]:
    """The attainable GFLOP/s on the dominant convolution and GEMM (and on the model's other large and widest
    convolutions), and each engine's fraction of the best convolution rate in its precision."""
    lines = ["", "## Distance to the limit (GFLOP/s, multiply-add = 2)", ""]
    precisions = ("float32", "bf16", "int8")
    for size, limit in entry["limits"].items():
        convs = [limit, *limit.get("others", [])]
        lines += [f"S={size}, dominant operation: {limit['op']}", "",
                  "| operation | float32 | bf16 | int8 |", "| --- | --- | --- | --- |"]
        rows = [("dominant conv", "conv", limit), ("its GEMM", "gemm", limit)]
        rows += [(conv["op"], "conv", conv) for conv in convs[1:]]
        for name, op, rates in rows:
            cells = [f"{rates[f'{op}_{p}']:.0f}" if f"{op}_{p}" in rates else "–" for p in precisions]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        ceiling = {p: max(conv[f"conv_{p}"] for conv in convs if f"conv_{p}" in conv)
                   for p in precisions if any(f"conv_{p}" in conv for conv in convs)}
        lines += ["", "| engine | ms per frame | GFLOP/s | fraction of the best conv rate in its precision |",
                  "| --- | --- | --- | --- |"]
        gflops = entry["gflops"][size]["stream_per_frame"]
        row = entry["inference"][size]
        for key, name, precision in ENGINE_PRECISIONS:
            if key in row and precision in ceiling:
                rate = gflops / (row[key] / 1000)
                lines.append(f"| {name} | {row[key]:.1f} | {rate:.0f} | {rate / ceiling[precision]:.0%} |")
        lines.append("")
    return lines
