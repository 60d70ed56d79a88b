"""Write bench/RESULTS.md from the latest benchmark and reliability-suite runs.

    python3 bench/report.py bench <criterion bencher output> <system tables>
    python3 bench/report.py fleet <the system bench's fleet tables alone>
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
    fleet_run, fleet = load("fleet.md")
    print("# Benchmark and reliability results\n")
    print("Regenerated by `just bench` (benchmarks) and `just soak` (reliability suite);")
    print("each run keeps its raw output in `bench/raw/`.\n")
    print(f"- benchmarks: {bench_run or 'not run yet — `just bench`'}")
    print(f"- reliability suite: {soak_run or 'not run yet — `just soak`'}")
    print(f"- fleet: {fleet_run or 'not run yet — `just bench` or `just bench-fleet`'}")
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

    if fleet:
        print(fleet.strip())
        print(FLEET_NOTES)

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
        if any(re.search(r"(?<![\d.])[1-9][\d.]*× the native", l) for l in lines):
            print(CEILING_NOTES)
        if any("the native ceiling" in l and "missed" in l for l in lines):
            print(THROUGHPUT_NOTES)
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

THROUGHPUT_NOTES = """
Where the JSON flow's ratio is missed: the machine of the 2026-12-01 run (an
Intel Xeon; that of 2026-11-25 an AMD EPYC, both 2 cores) was about half as
fast as the one before (the native JSON ceiling 26,500
against 52,800 records/s, the 50-line X12 call 547 µs against 208 µs), and
the ratio fell with it from 0.80 to 0.71; the CPU-bound X12 flows held at
0.95–0.97. `perf record -a` over the throughput section's first 30 s (the
JSON flow's rounds, ceiling and host alternating, and the start of the X12
flow): nats-server 27% of the samples, the threads under test 39% — their
own code 14%, libc's allocator and memcpy 13%, wasm code 8%, the kernel 3% —
and the harness 10%. The plugin is a small share: where the transform is
trivial the host's fixed per-record work decides the ratio — headers built
as strings, ids formatted, the payload copied into the plugin record and the
output copied back into a new buffer. Cutting those allocations (reused header
buffers, the consumed bytes passed to the call without the intermediate copy)
is the next step.
"""

LATENCY_NOTES = """
How steady the latency target at 5,000 records/s is: on the 2-core machine
of 2026-11-25 its p99 moved between runs from 1.4 ms to 3.0 ms above the
floor with the same build (1.7 ms in that day's report, met); the machine of
2026-12-01, half as fast, lands at 3–4.5 ms above it. `perf record -a` over
the latency section on that machine: nats-server 34% of the samples, the
host 25% (its own code 12%, libc 5%, the kernel 5%, wasm code 2%), the load
generator and collector 12%, idle 26%. The plugin is 2%: at 5,000 records/s
the two cores are mostly busy with the bus — a publish in, a fetch, a
publish out and its ack, an ack, each through nats-server — and the tail is
queueing where the host, nats-server and the harness share two cores. A load
generator and nats-server on other machines would separate the host's share;
that is not done here.
"""

NOTES = """
What is known where the hostile-plugin target is missed. `perf record` over
the section on 2026-11-25: the machine was not saturated (about 0.6 of its 2
cores busy), wasm code 6% of the samples, nats-server 21%, the kernel's
scheduling and networking most of the rest — so the tail comes from short
stalls, not from lost capacity. Since then a faulting connector is on
probation — one call at a time, on a `SCHED_IDLE` thread — which brought the
loop's effect down (see Improvements) but not within 10%. What still reaches the healthy connector, by our reading (not yet
confirmed by a trace of single stalls): each hostile connector's first
faulting call runs before it is known to be hostile, on the ordinary workers
— for the loop that is 100 ms of a core, 1% of the 10 s run, which is the
p99's share of records by itself; the huge-output plugin's calls return
normally, so it never goes on probation, and each of its records copies 2 MiB
out of the guest before being dead-lettered; and the memory bomb's pages are
zeroed by the kernel when its instance is rebuilt. The healthy connector's
p99 alone is itself 1.2–1.5 ms and moved by 18% between identical rounds, so
the misses beside one hostile plugin are a few tenths of a millisecond. Next:
count an unpublishable output as a fault, and move a call that outlives a few
epoch ticks onto the probation thread while it runs.
"""

FLEET_NOTES = """
Three `plexus up --bus` processes and one `nats-server` on the same
machine. Apply-to-running is the operator's view: from starting `plexus
apply` (a process that connects, checks the plugin's bytes in the registry
and writes the definition) until the last of the three hosts prints that
the connector runs; the first apply includes each host fetching and
compiling the plugin, the later ones add a connector of an already compiled
plugin. The throughput rows run the X12 mapping, which is CPU-bound in the
plugin, placed on one host by label and then on all three sharing its
durable consumer; the last column shows how the bus split the records. On
a machine of two cores one host already keeps both busy (four instances,
and `nats-server` beside them), so three hosts cannot be faster here: the
ratio shows that sharing costs little, not how it scales; hosts on machines
of their own add their cores.

The edge row (`just bench-fleet`, or `cargo bench --bench system -- edge`):
a hub `nats-server` in domain `hub`, a `plexus up` edge whose embedded bus
is its leaf node, and the hub killed while 100,000 HL7 requisitions are
stored at the edge; then the hub is started again. The first column is from
its start until the first forwarded record is stored there (the leaf link
reconnecting and the edge's pump resuming); the rate counts from that
record to the last, and the last column is what the hub holds once it
stops growing. Runs before 2026-12-03 had the hub source the edge's
streams (nats-server's durable sourcing) rather than the edge republish;
one of them stored 95,860 of 100,000, a hub source stalled by its retry
backoff (ARCHITECTURE.md, "Edge hosts").
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
- **The harness on threads of its own.** The load generator and the
  collector that stamps arrivals shared the host's two async workers, so the
  host was timed from inside itself: a worker held by the host delayed the
  stamp as well as the record. The system under test — the host, or the
  native ceiling — now runs on two workers of its own, the harness on two
  others, as separate processes would. With the same build, single runs
  beside the looping plugin went from 1.38 ms at p99 (1.18 ms alone) to 1.72
  and 3.99 ms (0.89 and 1.09 ms alone): the isolation showed the hostile
  plugins' effect more plainly rather than hiding it.
- **Medians of rounds.** Two single runs alone in one section differed by up
  to 16% at p99, as much as the target allows, so the hostile-neighbour table
  now runs every setup once a round, in turn, for three rounds, reports the
  median of each quantile and shows each round's p99.
- **Probation, one call at a time.** The runaway pause held one of the
  connector's `limits.concurrency` permits, so with a concurrency of 4 four
  faulting calls paused side by side and then ran side by side: a looping
  plugin at the default 2 s timeout could keep four cores busy half the
  time. A connector whose calls keep faulting now makes one call at a time
  until one returns; the test
  `faults::a_runaway_on_probation_makes_one_call_at_a_time_whatever_its_concurrency`
  saw the last of six looping calls end 0.7 s after the first four before,
  and at least 1.9 s after now.
- **Probation at idle priority.** Probation calls run on one thread of their
  own at the lowest priority. Medians of three rounds, beside the loop and
  beside all four: 3.44 and 5.09 ms at p99 against 1.40 ms alone with every
  call on a pool of ordinary plugin threads (the next item); 2.44 and 3.95 ms against 1.74 ms at nice 19;
  1.85 and 2.79 ms against 1.33 ms in `SCHED_IDLE`, kept.
- **Tried and dropped: every plugin call on threads of its own.** Running
  all calls on a pool of plugin threads apart from the bus workers did not
  lower the healthy connector's p99 beside the hostile plugins beyond the
  spread of rounds, and two thread wake-ups per call made the bare call
  (echo, 1 KiB) cost 50 µs instead of 5 µs and the JSON flow 0.52× the
  ceiling. Only probation calls change threads.
- **Tried and dropped.** A 1 ms epoch tick (against 10 ms), before and after
  the runaway pause, and four runtime worker threads instead of two did not
  lower the healthy connector's p99 beside the hostile plugins beyond the
  noise between identical runs (3.9 ms and 2.0 ms against 2.6 ms); kept as
  they were."""


def split_fleet(markdown):
    """(the sections of a system run but the fleet's, the fleet's)."""
    blocks = ("\n" + markdown).split("\n## ")
    head, sections = blocks[0], blocks[1:]
    fleet = [b for b in sections if b.startswith("Fleet")]
    rest = [b for b in sections if not b.startswith("Fleet")]
    join = lambda bs: "".join("## " + b.rstrip("\n") + "\n\n" for b in bs)
    return head.strip("\n") + ("\n" if head.strip() else "") + join(rest), join(fleet)


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode == "bench" and len(sys.argv) == 4:
        keep("plugins.txt", pathlib.Path(sys.argv[2]).read_text(encoding="utf-8"))
        system, fleet = split_fleet(pathlib.Path(sys.argv[3]).read_text(encoding="utf-8"))
        keep("system.md", system)
        if fleet:
            keep("fleet.md", fleet)
    elif mode == "fleet" and len(sys.argv) == 3:
        _, fleet = split_fleet(pathlib.Path(sys.argv[2]).read_text(encoding="utf-8"))
        if not fleet:
            sys.exit(f"report.py: no fleet tables in {sys.argv[2]}")
        keep("fleet.md", fleet)
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
