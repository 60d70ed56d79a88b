"""Write bench/RESULTS.md from the latest benchmark and reliability-suite runs.

    python3 bench/report.py bench <criterion bencher output> <system tables>
    python3 bench/report.py soak <directory of soak rows>
    python3 bench/report.py render

Each mode first keeps its inputs in bench/raw/ (dated), so that `just bench`
and `just soak` each refresh their own part and RESULTS.md always shows the
latest of both, with every target and whether it was met.
"""
import contextlib
import datetime
import io
import pathlib
import platform
import re
import subprocess
import sys

RAW = pathlib.Path(__file__).parent / "raw"
RESULTS = pathlib.Path(__file__).parent / "RESULTS.md"
SOAK_ORDER = ["kill", "restart", "flapping", "poison"]


def run(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "unknown"


def machine():
    cpu = next(
        (l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")),
        platform.processor(),
    )
    return f"{cpu}, {run('nproc')} cores, {platform.system()} {platform.release()}; {run('rustc', '--version')}"


def keep(name, text):
    """Store one run's output in bench/raw/ under a dated header line."""
    RAW.mkdir(exist_ok=True)
    header = f"run: {datetime.date.today().isoformat()} on {machine()}\n"
    (RAW / name).write_text(header + text, encoding="utf-8")


def load(name):
    """(header, body) of a stored run, or (None, "") if it never ran."""
    path = RAW / name
    if not path.exists():
        return None, ""
    header, _, body = path.read_text(encoding="utf-8").partition("\n")
    return header.removeprefix("run: "), body


def sections(markdown):
    """Map each `## ` heading's first words to the rows of its table."""
    found = {}
    for block in markdown.split("\n## ")[1:]:
        title, *lines = block.splitlines()
        rows = [
            [c.strip() for c in l.strip().strip("|").split("|")]
            for l in lines
            if l.startswith("|") and not l.startswith("|---")
        ]
        found[title] = rows[1:]  # without the header row
    return found


def table(found, prefix):
    return next((rows for title, rows in found.items() if title.startswith(prefix)), [])


def number(cell):
    return float(re.match(r"[\d.]+", cell).group())


def targets(system):
    found = sections("\n" + system)
    out = []
    for flow, native, host, ratio in table(found, "Throughput"):
        r = float(ratio)
        verdict = "met" if r >= 0.75 else f"missed by {0.75 - r:.2f}"
        out.append(f"- {flow}: {r:.2f}× the native ceiling (target ≥ 0.75×) — {verdict}.")
    for clean, dirty, ratio, dead in table(found, "Poison"):
        r = float(ratio)
        verdict = "met" if r >= 0.90 else f"missed by {0.90 - r:.2f}"
        out.append(
            f"- good records beside 1% poison keep {r:.2f}× the clean throughput "
            f"(target ≥ 0.90×) — {verdict}; {dead} poison records dead-lettered."
        )
    latency = {row[0]: row for row in table(found, "End-to-end latency")}
    floor = latency.get("plain NATS round trip (floor)")
    at5k = next((row for load, row in latency.items() if load.startswith("5000 records/s")), None)
    if floor and at5k:
        gap = (number(at5k[2]) - number(floor[2])) / 1000
        verdict = "met" if gap <= 2 else f"missed by {gap - 2:.1f} ms"
        out.append(f"- p99 at 5,000 records/s is {gap:.1f} ms above the floor (target ≤ 2 ms) — {verdict}.")
    hostile_rows = table(found, "A healthy connector")
    hostile = {row[0]: number(row[2]) for row in hostile_rows}
    alone = hostile.pop("alone", None)
    if alone and hostile:
        for name, p99 in hostile.items():
            over = p99 / alone - 1
            verdict = "met" if over <= 0.10 else f"missed by {over - 0.10:.0%} ({p99 - alone * 1.1:.0f} µs)"
            out.append(
                f"- the healthy connector's p99 {name} is {p99 / 1000:.2f} ms against "
                f"{alone / 1000:.2f} ms alone, {over:+.0%} (target within 10%) — {verdict}."
            )
        rounds = next((row[4] for row in hostile_rows if row[0] == "alone" and len(row) > 4), "")
        alone_runs = [float(v) for v in re.findall(r"\d+", rounds)]
        if len(alone_runs) > 1:
            out.append(
                f"  The healthy connector alone, in identical rounds, ranged over "
                f"{(max(alone_runs) - min(alone_runs)) / min(alone_runs):.0%} at p99 on this machine."
            )
    for swap, lost, dup in table(found, "Hot swap"):
        ms, lost, dup = number(swap), int(lost), int(dup)
        ok = ms < 50 and lost == 0 and dup == 0
        out.append(
            f"- hot swap in {ms:.0f} ms, {lost} lost, {dup} duplicated "
            f"(target < 50 ms, 0, 0) — {'met' if ok else 'missed'}."
        )
    for cold, warm, per in table(found, "Start-up and density"):
        mib = number(per)
        verdict = "met" if mib <= 2 else f"missed by {mib - 2:.2f} MiB"
        out.append(f"- {mib:.2f} MiB resident per idle connector (target ≤ 2 MiB) — {verdict}.")
    return out


def render():
    bench_run, criterion = load("plugins.txt")
    system_run, system = load("system.md")
    soak_run, soak = load("soak.md")
    print("# Benchmark and reliability results\n")
    print("Regenerated by `just bench` (benchmarks) and `just soak` (reliability suite);")
    print("each run keeps its raw output in `bench/raw/`.\n")
    print(f"- benchmarks: {bench_run or 'not run yet — `just bench`'}")
    print(f"- reliability suite: {soak_run or 'not run yet — `just soak`'}")
    print("- wasmtime 48, plugins built for wasm32-wasip2 in release\n")

    rows = []
    for line in criterion.splitlines():
        m = re.match(r"test (\S+)\s+\.\.\. bench:\s+([\d,]+) ns/iter \(\+/- ([\d,]+)\)", line)
        if m:
            rows.append((m.group(1), int(m.group(2).replace(",", "")), int(m.group(3).replace(",", ""))))
    if rows:
        print("## Plugin call cost (warm instance, no bus)\n")
        print("| benchmark | per record | ± | records/s on one core |")
        print("|---|---|---|---|")
        for name, ns, dev in rows:
            print(f"| `{name}` | {ns / 1000:.1f} µs | {dev / 1000:.1f} µs | {1e9 / ns:,.0f} |")
        print("\nEach call takes a warm instance from the connector's pool (no per-record")
        print("instantiation), copies the record into the component, runs the plugin and")
        print("copies the outputs back. The X12 benchmark parses and maps a 50-line 850 to")
        print("a canonical `purchase-order/1`; `echo` is the boundary alone.\n")
    if system:
        print(system.strip())
        print("\nThe native ceiling is a hand-written JetStream consumer on its own")
        print("connection running the same transform crate compiled natively, with the")
        print("same pulls, publish ids, publish acks, input acks and 256 records in flight.")
        print("Throughput counts outputs between the first and the last, so neither side's")
        print("start-up is in it.\n")

    if soak:
        print("## Reliability suite (`just soak`)\n")
        print("| scenario | outcome, checked record by record |")
        print("|---|---|")
        print(soak.strip())
        print("\nEach row is written only after every assertion of its test has held;")
        print("`tests/all/soak.rs` says what each test proves.\n")

    if system:
        print("## Targets\n")
        lines = targets(system)
        print("\n".join(lines))
        if any(re.search(r"\b[1-9][\d.]*× the native", l) for l in lines):
            print(CEILING_NOTES)
        if any("p99 at 5,000" in l for l in lines):
            print(LATENCY_NOTES)
        if any("healthy connector" in l and "missed" in l for l in lines):
            print(NOTES)
    print(IMPROVEMENTS)


CEILING_NOTES = """
A ratio above 1 is not the host beating native code: the two medians are
within the spread between runs. The X12 flows are CPU-bound, and on two
cores the native ceiling's 1 KB median has moved from 13,500 to 17,400
records/s between runs of the same build.
"""

LATENCY_NOTES = """
How steady the latency target at 5,000 records/s is: on the 2-core
development machine its p99 has moved between runs from 1.4 ms to 3.0 ms
above the floor with the same build, so a single run can land on either
side of the 2 ms target. `perf record` over the latency section shows
wasm code at 2% of the samples, nats-server at 22% and the kernel — loopback
TCP and the scheduler — at about half: the load generator, the collector,
the host and nats-server share two cores, and the tail is where they collide.
The median of several runs, or a load generator on another machine, would
separate the host's share; neither is done yet.
"""

NOTES = """
What the profile shows where the hostile-plugin target is missed (`perf
record` over the whole section on the 2-core development machine): the
machine is not saturated — about 0.6 of its 2 cores are busy on average, wasm
code is 6% of the samples, nats-server 21%, the kernel's scheduling and
networking most of the rest. The runaway pause keeps the looping plugin and
the memory bomb off the CPU most of the time. So the tail comes from short
stalls, not from lost capacity; our reading, not yet confirmed by a trace of
single stalls, is that a hostile record holds one of the runtime's two worker
threads while its instance is rebuilt after a trap, while memory grows, or
for an epoch tick of looping, and healthy records queued on that worker wait.
With one record in a hundred delayed by about a millisecond, the p99 moves.
The p99 alone is itself about 1 ms, so the misses beside one hostile plugin
are a few tenths of a millisecond at most. A 1 ms epoch tick
and twice the worker threads were both tried and moved nothing beyond the
noise between identical runs. The next step is to run plugin calls on
threads of their own, apart from the workers that move records on and off
the bus, so the OS rather than the async scheduler shares the cores between
them.
"""

IMPROVEMENTS = """## Improvements

Each measured before and after on this machine, in the same kind of run.

- **Records in flight.** Bounding records in flight per connector by
  `limits.concurrency` (4): 12,953 records/s and a p99 of 54 ms at 5,000
  records/s. Letting up to 256 records wait for their publish acks while only
  4 at a time enter the plugin: 42,020 records/s and a p99 of 0.9 ms.
- **An honest ceiling.** The first ceiling shared the publisher's connection
  and parsed into a `serde_json::Value`; the host measured 1.75× of it, which
  only said the ceiling was slow. It now runs the same plugin crate natively on
  its own connection, and throughput excludes start-up on both sides. Single
  runs of the JSON flow then still landed anywhere from 0.69× to 0.98× on the
  same day, so each side now runs five times, alternating, and the medians
  are compared.
- **Runaway pause.** With a looping plugin (timeout 100 ms), a memory bomb, a
  deep recursion and a huge output beside it, the healthy connector's p99 was
  21.4 ms (977 µs alone): the hostile ones kept both cores busy. A connector
  whose calls keep faulting (timeout, memory cap, trap) now pauses before its
  next call, 100 ms doubling to 2 s, and any call that returns resets it;
  after: 2.6 ms (0.85 ms alone). Stopping such a connector cuts its pause
  short and releases its waiting records to the next version.
- **Traps are strikes too.** The pause first counted only timeouts and memory
  faults, so the deep recursion (a stack-overflow trap on every record) kept
  its calls coming: beside it the healthy p99 was 1.47 ms (0.98 ms alone),
  beside all four 2.24 ms. Counting every faulted call: 1.08 ms beside the
  recursion and 1.68 ms beside all four (0.91 ms alone).
- **Tried and dropped.** A 1 ms epoch tick (against 10 ms), before and after
  the runaway pause, and four runtime worker threads instead of two did not
  lower the healthy connector's p99 beside the hostile plugins beyond the
  noise between identical runs (3.9 ms and 2.0 ms against 2.6 ms); kept as
  they were."""


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode == "bench" and len(sys.argv) == 4:
        keep("plugins.txt", pathlib.Path(sys.argv[2]).read_text(encoding="utf-8"))
        keep("system.md", pathlib.Path(sys.argv[3]).read_text(encoding="utf-8"))
    elif mode == "soak" and len(sys.argv) == 3:
        rows = {p.stem: p.read_text(encoding="utf-8").strip() for p in pathlib.Path(sys.argv[2]).glob("*.md")}
        missing = [name for name in SOAK_ORDER if name not in rows]
        if missing:
            sys.exit(f"report.py: no soak row for {', '.join(missing)} in {sys.argv[2]} (did those tests pass?)")
        keep("soak.md", "\n".join(rows[name] for name in SOAK_ORDER) + "\n")
    elif mode != "render":
        sys.exit(__doc__.strip())
    with contextlib.redirect_stdout(io.StringIO()) as out:
        render()
    RESULTS.write_text(out.getvalue(), encoding="utf-8")
    print(f"wrote {RESULTS}")


main()
