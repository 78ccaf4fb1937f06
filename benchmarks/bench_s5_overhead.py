"""S5 — healthy throughput and instrument overhead (SCENARIOS.md).

chain-3, 1,000 records (3,000 requests), 32 parallel requests, against the mock endpoint in a
child process (50 ms latency). Variants, run round-robin ``--repeats`` times in one go:

* ``bare_aiohttp`` — a bare aiohttp client doing the same number of requests (the floor);
* ``no_sinks``     — ddscope with an empty event bus;
* ``record``       — ddscope writing run.jsonl;
* ``otel_memory``  — run.jsonl + OtelSink spans and metrics, on the providers ``ddtrace run``
  builds, into the SDK's in-memory exporter (BatchSpanProcessor) and metric reader;
* ``otel_otlp``    — run.jsonl + OtelSink over OTLP/gRPC (the real ``build_otel_sink`` set-up)
  to a receiver in another child process.

Prints per variant the median wall and CPU (``time.process_time``: this process, all threads —
the endpoint and the receiver run elsewhere), the ratios the goals are stated in (issue 17: no
sinks ÷ bare client ≤ 1.05 wall and ≤ 350 µs CPU per model task; full instrumentation ÷ no sinks
≤ 1.10 wall, ≤ 1.20 CPU) both as a ratio of medians and paired by round (each variant over the
no-sinks run of its own round, then the median: robust to the machine's drift over minutes), CPU
µs per task, run.jsonl bytes per task, the spans the receiver got against those the records
imply, then one ``JSON`` line. The CPU goal of full instrumentation also gets a verdict from its
rounds: a 90 % distribution-free interval for the median of the per-round ratios (the k-th
smallest to the k-th largest round) — "met" only when the whole interval is at or under 1.20,
"not met" when it is above, else "undecided". Three rounds cannot give a 90 % interval (the
smallest to the largest of three covers the median 75 % of the time); five can. Usage::

    .venv/bin/python benchmarks/bench_s5_overhead.py [--records 1000] [--repeats 3]

Where the time goes (issue 17). **Before** (cProfile of one ``no_sinks`` run, 1,000 records,
9.8 s profiled including 0.8 s asleep in epoll; self time by layer; 749 µs CPU per task):

======================================  =====  ==============================================
layer                                   share  notes
======================================  =====  ==============================================
httpx (ModelClient → httpx → aiohttp)   26 %   ``build_request`` 1.75 s cumulative, 0.96 s of it
                                               re-parsing the relative URL ``chat/completions``
                                               per request (a prebuilt absolute URL: 66 → 20 µs
                                               per request, measured); cookie extraction 0.75 s;
                                               the response re-wrapped for the bounded read
aiohttp                                 16 %   what the bare client also pays
ddscope engine (scheduler, dispatch,    14 %   no single hot spot; events: validated
worker, admission, events)                     construction 2.2 µs each (``model_construct`` is
                                               slower, 7.4 µs), 4 per task
asyncio, sockets                        12 %
======================================  =====  ==============================================

``ModelClient.chat`` was 63 % of the profiled time: the no-sinks gap to the bare client was
mostly the httpx layer, not the engine.

**After** (py-spy, 500 Hz, one ``no_sinks`` run of 1,000 records; samples asleep in epoll left
out; self time by layer; 347–359 µs CPU per task in the benchmark, load average 1.0–2.0):

======================================  =====  ==============================================
layer                                   share  notes
======================================  =====  ==============================================
asyncio, sockets                        37 %   ``socket.send`` alone ≈ 85 µs a request under
                                               cProfile (the kernel's loopback TCP, billed to
                                               the sender)
aiohttp                                 30 %   as in the bare client: ``engine/aiohttp_post.py``
                                               sends with aiohttp directly (prebuilt URL, no
                                               cookie jar, one deadline, 2xx parsed on a short
                                               path, quota headers from the raw pairs)
ddscope engine                          25 %   flat: worker 5 %, dispatch 5 %, gate 3 %, tasks,
                                               fair queue, task admission 2 % each; nothing
                                               above 1.5 % on its own
model client (ours), orjson              4 %
events (pydantic validation)             2 %
======================================  =====  ==============================================

``ModelClient.chat`` is now 37 % of the active samples and costs what a bare aiohttp call does
(``bench_client.py``: 0.228 ms CPU a request against 0.235 ms bare; 0.43 ms before). The engine's
own ≈ 120 µs a task is spread over scheduling, admission and events. Wall: the engine kept on
average 30.3 of 32 request slots busy (an in-flight counter sampled every 5 ms): a finished
worker's slot was leased again only two event-loop turns later (its done-callback, then the
pump's wake), ≈ 1 ms each on a loop busy with a wave of answers; the worker now finishes its
lease and leases the freed slot in its own last step (``dispatch.py``), 30.7 of 32. No-sinks
wall over the bare client's, same session: 1.24× before issue 17's changes, 1.07× with the
direct aiohttp client, 1.02–1.04× with the dispatch change too.

**Runners** (issue 17, after the above): a runner that finishes a cell runs the next lease it
frees itself, so S5's 3,000 cells run in 32 asyncio tasks, not 3,000, and in 3,695 event-loop
turns instead of 5,211 (cProfile); a refused lease blocks every column needing the full resource
(one ``select`` per wake instead of one per column). Engine-only A/B (the same chain-3 with a
client that sleeps 1 ms instead of sending HTTP, CPU per cell, medians of 5, interleaved): 90 and
82 µs before, 81 and 80 µs after — a few µs, below what S5 itself can resolve on this shared
machine. S5 ``--repeats 3``, no sinks: 339 µs a task before (bare client 213 µs a request, load
0.65), 360, 397 and 411 µs after in three runs (bare client 203, 233 and 213 µs; load 0.1–1.2);
no sinks ÷ bare client CPU run by run 1.69–1.84 before, 1.70–1.92 after: no gain S5 can show,
and none beyond its noise either way. The ≤ 350 µs goal is not met reliably (once before, never
after): the engine's 125–200 µs a task over the bare client has no hot spot left (events'
validation ≈ 9 µs, the rest spread over dispatch, gate and worker).

The instruments, replayed without the network
(``bench_sink_cost.py``, CPU per task): run.jsonl 9.4 µs; OTel 108 µs with ``start_span`` for
every span (before issue 17) → 53 µs, of which the 3 histogram measurements per attempt are
≈ 24 µs (SDK 1.45: ~8 µs each, 3 µs on 1.43) and the spans ≈ 6 µs (finished spans handed
straight to the processors, ``otel/direct.py``, instead of ``start_span`` + ``end`` at ~26 µs
each). Live, record + OTel cost ≈ 140 µs per task on the engine's thread (``time.thread_time``);
garbage collection is ≈ 11 µs of the difference (31 → 42 µs per task with the sinks), deferring
every event to the end of the run costs the same, so the rest is the same code running colder.
That cost did not shrink with the client's, so as a ratio it grew: record + OTLP costs 127–143 µs
a task over no sinks, 1.36–1.41× its CPU (1.31× when no sinks cost 714 µs a task).

**The sinks, live, found** (issue 17, a later session; load average 0.5–0.8). Timing each part
inside live runs (``time.thread_time`` around the batch, the writer's flush and the encoder):
OTel's batch 39 µs a task on the engine's thread, the encoder 21 µs on the span processor's,
the record's ``model_dump_json`` 30 µs on the engine's (≈ 7 µs an event against 1.4 µs in a
tight loop). A sink that only *keeps* each event in a list (no thread, no serialising) already
cost ≈ 14 µs a task, and gc callbacks showed why: kept events cross the young generation's
700-allocation threshold 40–55 times a run, at ≈ 0.5 ms a collection (record: 40 collections,
23 ms; record + OTLP: 55 and 35–80 ms, sometimes one full collection of 35–43 ms; no sinks: 5,
1 ms). ``gc.freeze()`` did not help (the cost is the young objects); a young threshold of 20,000
during the run left 0–1 collections and took record + OTLP from 1.33–1.40× to ≈ 1.23× in the
same experiment — ``engine/gc_pacing.py`` now does that for every run. Then: the record's
``handle`` only queues the (frozen) event and its writer thread serialises each batch (the
engine's thread no longer pays; the writer ≈ 16 µs a task); histogram values are queued and
folded into the aggregation once per batch (replayed OTel 32 → 20 µs a task); the encoder reads
an SDK span's fields (8.5 → 7.7 µs a span). Live after all four, one run: OTel's batch 26 µs a
task, the encoder 17, the record's writer 14, the rest (gRPC, event hand-off) ≈ 20 — ≈ 80 µs a
task over no sinks; ``--repeats 5``: record + OTLP 1.18× CPU, 1.01× wall.

Tried and not kept: serialising events with orjson from ``__dict__`` (byte-identical, but 2.9 µs
an event against pydantic's 1.4); serialising the record in 256-event batches on the engine's
thread (no difference S5 can resolve); caching the scrubbed response-model name (0.5 µs); fewer
thread wake-ups (the record's writer every 0.5 s instead of 0.1 s and span batches of 2,048
instead of 512: record + OTLP over no sinks 1.212× against 1.216×, paired over 4 rounds).

**uvloop** (issue 17, a later session): ``ddtrace run`` now runs on uvloop where it is installed
(``engine/event_loop.py``), and so do the ddscope variants here (``--loop asyncio`` for asyncio's
own; ``bare_uvloop`` is the bare client on uvloop, for comparison: it gains nothing there).
Interleaved, 4 rounds, CPU a task: no sinks 403 → 392 µs, record + OTLP 503 → 468 µs (the
sinks' share falls most: record + OTLP over no sinks 1.247× → 1.220×). uvloop rounds timers to
whole milliseconds and can fire one up to ~1.5 ms early; the engine's clock sets timers 2 ms
later on such loops, so a cooldown never ends before a server's Retry-After
(``tests/test_event_loop.py``). A column blocked by a full resource is now known before the
fair queue is asked (``dispatch.py``): engine-only 87 → 83 µs a cell.

On a machine whose speed moves by ±10 % from run to run, four ``--repeats 5`` runs the same
afternoon gave no sinks 359, 402, 412 and 390 µs a task with the bare client at 207, 250, 240 and
222 µs a request (1.73×, 1.61×, 1.72×, 1.76× — the goal of 350 µs was set when the bare client
cost 200 µs, i.e. 1.75×), and record + OTLP over no sinks 1.216×, 1.294×, 1.165× and 1.224×
(paired by round 1.217×, 1.310×, 1.137×, 1.251×). Building the engine's events without pydantic's
validation (an experiment: instances made by ``__new__`` and ``__dict__``) saved 12.4 µs a task
live (no sinks, paired over 5 rounds) — the largest single item left; not done (a type slip would
write a record the reader refuses).

**Where the sinks' live cost goes** (issue 17, a later session). Replayed (``bench_sink_cost.py``),
record + OTLP cost ≈ 44 µs a task; live, 80–100. The OTLP encoder now takes 5.6 µs a span (7.7
before: int pairs cached too, keys with many distinct values — ids, rows — no longer cached, so
they stop pushing the repeating pairs out; ids and times packed in one ``struct`` call), replayed
OTLP 45 → 38 µs a task. Everything else was measured live, interleaved, 6–10 rounds, as the
paired median over no sinks (µs a task), and not kept: the OTel sink's batch of 4,096 events
instead of 256 (88 against 84); its batches made on a thread of its own every 0.1 s (97 against
84); OTLP/HTTP instead of gRPC (101 against 100); no histogram measurement at all (80 against 82:
the histograms cost nothing S5 can see); span export batches of 64 or 128 instead of 512 (107 and
93 against 81: each export call costs ≈ 1 ms of CPU); events built without validation (no sinks
−9, record + OTLP −12: the ratio does not move, 1.255 against 1.265); pydantic's per-instance
fields-set (2.3 KB of an ``AttemptFinished``'s 2.8) swapped for a shared empty one (no gain); a
sink that keeps each event until 512 are queued and does nothing else (+0: keeping events alive
costs nothing); the record's written events freed on the engine's thread instead of the writer's
(record −7, record + OTLP +8: noise). With sampling off (no span reaches a processor) record +
OTLP costs 74 against 98: the span export path (processors, encoder, gRPC) is ≈ 25 µs a task,
the record ≈ 27, the OTel sink's own work on the engine's thread the rest (its batches: 25 µs a
task live, ≈ 14 replayed). The record, live: its writer thread 15 µs a task (serialising 9.5 —
2.4 µs an event against 0.87 in a tight loop —, writing 3), and the engine's thread 11–13 µs
more than without it, for one locked append an event — the same when the writer only serialises
at the end of the run (a 30 s interval), so it is not the two threads' interplay.
``orjson`` from a None-filtered ``__dict__`` is 2.7 µs an event against pydantic's 0.87; leaving
``exclude_none`` out gains nothing (0.85). No single part left is large enough to bring record +
OTLP under 1.20× no sinks reliably: the remaining cost is spread over ≈ 40 small steps a task,
each cheaper replayed than live. The one structural change measured to be big enough: task
lease and attempt spans encoded straight from their events into OTLP bytes (no attribute dicts,
no pending span or ``ReadableSpan``, the domain's attributes encoded once) — a ``/tmp``
prototype over S5's replayed stream, metrics kept, cost the OTel sink plus encoding 23.5 µs a
task against 37.3 (−14 µs replayed; the hand-off to the span processors, not in the prototype,
costs ≈ 2 of it back). To ship it needs: an encoded-span type the batch processor can queue and
the encoder frames, only when the provider's sole processor is ddscope's own OTLP pipeline and no
span limit can bite; the SDK fallback fed the parsed bytes; span contexts for waits, cooldown
links and unfinished spans; and a test that the bytes equal the generic path's.

**Finished spans, and what the live cost is made of** (issue 17, a later session). ddscope's own
OTLP pipeline now takes the sink's ``FinishedSpan`` (``otel/direct.py``: no ``ReadableSpan``, no
processor fan-out, straight onto the batch processor's queue; the encoder reads it directly;
another processor, a span limit or the SDK's own encoder get ``ReadableSpan`` as before), and
the encoder caches span names by name (a ``SpanKind`` in the key cost its Python-level hash).
Replayed OTLP (``bench_sink_cost.py``) 38 → 28.3 µs a task. Live, the two checkouts A/B'd in
fresh processes, 10 rounds, order alternating: record + OTLP over no sinks 78.4 → 73.9 µs a
task (paired ratio 1.231 → 1.209) — the replayed saving, not more. Measured the same session,
``/tmp`` harnesses, paired medians over no sinks (µs a task):

* the OTel sink with its batches emptied and nothing made (``EventBatcher.drain`` clears the
  queue): +41 against the record's +45 — all of OTel's live cost follows from the batches; the
  batches themselves take 22 µs a task of the engine thread's CPU live (``thread_time`` around
  ``drain``; 15 replayed), the engine thread ≈ 13 more around them, the other threads (span
  export: encoding, gRPC) ≈ 20;
* no sinks 338, 316, 331 and 320 µs a task on four ``--repeats 5`` runs (goal ≤ 350: met in
  each), the sinks still ≈ 70–95 µs on top: record + OTLP over no sinks 1.241, 1.266, 1.281
  and 1.270 as ratios of medians (paired 1.255, 1.265, 1.256, 1.273) — a faster engine makes
  the same sink cost a larger ratio;
* not kept: the six request-path events built without pydantic's validation by a typed,
  test-checked constructor (``__dict__`` filled from a template): *slower* than pydantic-core's
  validated construction, 1.86 against 1.55 µs an event in a tight loop and 77 against 75 µs a
  cell in ``bench_engine_only.py`` (the earlier live estimate, −9 to −12 µs a task over 5 S5
  rounds, was within S5's noise);
  ``sys.setswitchinterval(0.05)`` (fewer forced GIL hand-offs): +4, noise; the finished spans
  encoded on the engine's thread as they end instead of in the export thread's batches: +13
  (worse: the export thread's batch is the cheaper place); a sink burning a fixed 20 µs a task
  of pure Python every 256 events: −0.5 total, +12 on the engine's thread (the noise of one
  variant's CPU across rounds is ± 20 µs a task, which is why only 10-round A/Bs were trusted).
* The method changed here: every run starts from a collected heap (an earlier variant's garbage
  was collected inside whichever run came next — otel_otlp always ran after otel_memory), each
  round starts one variant later, and the goals' figures are printed round by round.

**Spans handed over per batch, and where the engine thread's time goes** (issue 17, a later
session). The sink's finished spans are queued on the batch processor once per batch of events
(one ``deque.extendleft``, not an ``emit`` with its ``os.getpid()`` per span), span contexts are
built as the tuples they are, an attempt's attributes come from one comprehension over its
fields, and the exemplar filter's verdict is asked once per fold for the SDK's own filters.
Replayed, 10 rounds alternating with the code before (``/tmp`` harness, S5's stream through the
OTLP sink): the engine thread's share 14.5 → 11.8 µs a task, all threads 27.3 → 24.6;
``bench_sink_cost.py`` OTLP 28.3 → 24.8. Live, two checkouts in fresh processes, 12 rounds:
record + OTLP over no sinks 74.7 → 68.2 µs a task (paired ratio 1.255 → 1.223) — within S5's
noise (an earlier 10-round A/B, disturbed by a test run, went the other way). Then the encoder
reads the usual finished span's context as a tuple and frames spans without a copy (4.04 → 3.51
µs a span), the record's ``handle`` appends to a deque without a lock (~300 → ~110 ns an
event), and the OTel sink's ``handle`` is its batcher's ``add``: replayed OTLP 27.6 → 23.8 µs a
task against the session's start, ``bench_sink_cost.py`` 23.4; live, 12 rounds, 70.0 → 64.9
(paired ratio 1.250 → 1.226). ``--repeats 5`` runs: record + OTLP over no sinks 1.208, 1.276,
1.210, 1.205, 1.256, 1.227, 1.234, 1.145 along the way, 1.232, 1.200 and 1.244 at the end
(paired 1.229, 1.179, 1.241), no sinks 276–325 µs a task — the sinks' saving shows in A/Bs,
but S5's medians stay around 1.22, inside their own spread.

Inside live runs (5 rounds, ``time.thread_time_ns`` wrappers, their own cost included): the
engine's thread costs 300 µs a task with no sinks and 355 with record + OTLP (+55); the bus's
``emit`` (both sinks' ``handle`` and OTel's batches) accounts for ≈ 27 of it and the batches for
17 (≈ 11 replayed), so ≈ 28 µs a task is the engine's *own* code running slower beside the
sinks (with the record alone: +15 on the engine's thread, ≈ 7 of it outside the record's code).
That extra is user time, not the kernel's (``getrusage``: system time 13 → 22 µs a task, user
280 → 338), with no page faults and 0.29 → 0.46 voluntary context switches a task: not
syscalls, paging or thread hand-offs. The likeliest cause left is the sinks' data and code
displacing the engine's in the CPU's caches (these VMs expose no hardware counters to confirm
it). The receiver process meanwhile uses 11.7 µs a task on the other core and the mock endpoint
150. This is why a µs saved replayed is not a µs saved live, and why the CPU goal stays at the
centre of S5's spread (≈ 1.21) rather than under it.

**The encoder's attribute pairs, and the record's writer live** (issue 17, a later session).
The OTLP encoder caches pairs by tag, then key, then value (two dict lookups, no key tuple to
build and hash; bools, equal to 1 and 0, no longer cached) and writes an int below 16,384 (most
ids, every row) as a per-key prefix and its one or two varint bytes: S5's finished spans 3.5 →
2.7 µs a span (attributes are ≈ 70 % of a span's encoding: 0.8 µs a span without them). A
direct span's end attributes are added to its own dict instead of a merged copy, and span ids
are drawn with ``random.getrandbits`` directly when the provider has the SDK's random id
generator. Replayed, 10 alternating processes against the session's start: OTLP sink 23.6 →
22.1 µs a task (engine thread −0.2, the rest on the export thread); ``bench_sink_cost.py`` OTLP
22.3. ``--repeats 5`` runs: record + OTLP over no sinks 1.220 at the session's start, then
1.179, 1.209, 1.178, and with the final hot-path code 1.214, 1.217, 1.224, 1.192, 1.184, 1.209
(paired 1.184, 1.201, 1.180; 1.215, 1.204, 1.225, 1.177, 1.199, 1.274), no sinks 275–301 µs a
task: the saving is ≈ 1.5 µs a task, 0.005 of the ratio, inside the spread.

Measured the same session, live, ``/tmp`` harnesses (6–10 rounds, paired over no sinks):

* the record's writer thread (``thread_time_ns`` in the thread): 51 flushes a run, 10 µs a task
  inside ``flush`` and 11.5 in the whole thread; with a 20 ms interval, 245 flushes, 15 and 21.
  So a flush costs ≈ 78 µs plus ≈ 2.2 µs an event live, against 0.65 µs an event replayed (the
  ``write`` itself ≈ 14 µs for 40 KB): the events are cold by the time they are written,
  whether 20 or 100 ms old;
* not kept: the writer every 20 ms (+27 µs a task), the OTel sink's batches of 64 events (+15),
  the record serialised on the engine's thread in batches of 256 or 64 events as they are
  handed over, where the OTel sink has just read them (+9, +13), the record flushed by a timer
  on the event loop instead of a thread (record alone −9, record + OTLP +5: noise); attempts'
  domain attributes shared by reference and their bytes cached by identity (the engine builds
  smaller dicts, but the encoder's check that the two parts do not clash costs what the cached
  bytes save: +0.18 µs an attempt span).

**Instructions instead of seconds** (issue 17, a later session). S5 cannot resolve a change of a
few µs a task without tens of interleaved rounds. ``bench_sink_instructions.py`` counts what a
sink executes on S5's replayed stream with valgrind's cachegrind (every thread; start-up left
out by difference), repeatable to ≈ 0.1 % from run to run: at 1,000 records the record costs
52,300 instructions a task, OTel in memory 144,300 and OTLP 186,200. Replayed, the OTLP sink
runs them in ≈ 22 µs (``bench_sink_cost.py``); a whole no-sinks run executes ≈ 822,000 a task
under cachegrind (runs of 200 and 400 records, one process each), which S5 runs in ≈ 285 µs:
live code runs at about a third of the replayed rate (valgrind slows the run until it is bound
by the CPU, so that count is rough). That is the "colder" of the sections above, as a rate, and
why a replayed saving shows live by about the same share, not the same µs.

Measured the same session and not kept:

* **mypyc.** The OTel sink's modules (``sink``, ``spans``, ``direct``, ``histograms``,
  ``batch``, ``genai``, ``requests``, ``encode``) compiled with mypyc, their source unchanged:
  OTel in memory 144,300 → 117,800 instructions a task, OTLP 186,200 → 128,700 (−31 %);
  ``bench_sink_cost.py`` OTLP 21.1 → 16.5 µs a task (three alternating runs). Live, two
  checkouts in alternating processes, 40 rounds each (no sinks and record + OTLP in each
  round, order alternating): record + OTLP over no sinks 56.4 → 53.8 µs a task as the median
  of the paired differences, 58.0 → 50.4 as their mean (standard errors 3.0 and 2.6); ratio of
  medians 1.211 → 1.180, paired 1.215 → 1.196. So −3 to −8 µs a task live: not enough to put
  the CPU goal reliably under 1.20 alone, for a build step (a C compiler and mypy at install
  time; an editable install's compiled modules shadow the edited source until rebuilt) and
  mypyc's stricter runtime (a value of another type than annotated raises, which would switch
  the OTel sink off for the run).
* **Each variant in a fresh process** (no state carried from the variants before, as one
  ``ddtrace run`` per process): 10 rounds, record + OTLP over no sinks 1.182 as a ratio of
  medians, 1.217 paired. In one process, 8 rounds a run, ratios of medians: 1.203 and 1.237
  with only no sinks and record + OTLP, 1.205 and 1.201 with OTel in memory between them. No
  sign that the variants' order or leftovers move the ratio; the method stays.
* **A span export's cost is mostly outside its instructions.** Replayed with export batches of
  64 instead of 512 spans (``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``, queue 100,000): 194,400 against
  186,200 instructions a task, ≈ 300,000 an export (≈ 0.1 ms at the live rate); live, the same
  change cost ≈ 26 µs a task (above), ≈ 1 ms an export. The rest is the kernel's time (system
  time is ≈ 9 of the sinks' ≈ 60 µs a task, above) and thread wake-ups, which cachegrind does
  not count. Batches of 2,048 save 1,000 instructions a task; not made the default, because a
  request that large with prompt and completion text recorded could pass a collector's 4 MiB
  limit.
* **The per-run fixed cost, again:** the OTel providers' shutdown (each signal's last export
  and the exporters' gRPC channels, in parallel threads) takes ≈ 5 ms of CPU a run, ≈ 3.5 with
  either signal off — ≈ 1.7 µs a task at S5's size.

**Attempt metrics per batch, and a verdict from the rounds** (issue 17, 2026-12-01). A finished
attempt is now one queued tuple; the sink measures a batch's attempts a (domain, outcome) group
at a time (``otel/attempt_metrics.py``), and a histogram counts a batch's buckets with one
search a boundary in the sorted values instead of one a value (``otel/histograms.py``, 3.0
against 4.9 µs for 64 values; ``Counter(map(bisect_left, …))`` was slower, 7.0). Instructions at
1,000 records: OTel in memory 144,300 → 131,071, OTLP 186,200 → 172,166 a task (−7.5 %).
``bench_sink_cost.py``, two runs alternating with the code before: OTLP 21.4 and 20.5 → 20.5 and
20.2 µs a task. Live, 20 rounds each in alternating processes: record + OTLP over no sinks 52.3
→ 50.9 µs a task (paired ratio 1.203 → 1.196), inside the noise. ``--repeats 15`` afterwards: no
sinks 248 µs a task, record + OTLP 1.223× CPU as a ratio of medians, 1.211× paired, rounds
1.056–1.264×; the report's new verdict line: "undecided", the 90 % interval of the rounds'
median 1.182–1.239.

Measured the same day and not kept:

* **Spans encoded on the engine's thread** in the sink's batch, right after they are made (the
  export thread then only frames the bytes): live, 20 rounds each, 54.5 against 54.8 µs a task
  over no sinks — nothing. The encoder is 38 % of the OTLP sink's instructions (with it
  returning no bytes: 115,400 against 185,900 a task at 300 records) but ≈ 23 % of its replayed
  time (2.45 µs a span in a tight loop): instruction-dense code that runs fast.
* **A generated per-class JSON writer for the record** (field by field, ``str`` for ints, the
  json module's C string escaper): 1,255 against pydantic-core's 513 ns for a
  ``lease_started``, 1,671 against 754 for an ``attempt_finished``; ``orjson`` over a
  None-filtered ``__dict__`` 627 and 894. pydantic-core stays.
* **Where the live difference sits**, ``perf record -e cpu-clock`` (the VM has no hardware
  counters) of one no-sinks and one record + OTLP run of 2,000 records: the extra samples are
  spread over the interpreter (``_PyEval_EvalFrameDefault`` +12 %, allocation and dict lookups),
  pydantic-core (+0.5 points) and gRPC's own threads (0.7 % of the process); no single
  function stands out.
* **Every thread on one core** (``taskset -c 0``, the endpoint and receiver on the other; the GIL
  lets one thread run Python at a time anyway, so the sinks' threads could share the engine's
  caches): 8 rounds each against the same runs unpinned, no sinks 232 against 252 µs a task,
  but record + OTLP 66 against 56 µs a task over it (paired ratio 1.293 against 1.224). Worse.

**What the sinks keep, per thread** (issue 17, 2026-12-01, a later session). Each thread's CPU
inside live runs (``/proc/self/task/*/schedstat`` and ``time.thread_time`` at each thread's end;
6 rounds, medians over no sinks, µs a task): the engine's thread +27.6 (the OTel sink's batches
and the engine's own code running colder), the record's writer 8.6, the span export thread 9.5
(encoding and gRPC: 12 export calls a run at ≈ 0.5 ms of CPU each — batches of 128 spans made
it 15.6), the metric reader 0.6, the end of the run (the last batch, flushes) ≈ 4; 49 in all.
A sink that keeps events costs more than what it runs: the events outlive the engine's next
allocations and are freed on another thread, so the memory they hold is what matters, and
pydantic gives every event its own set of the fields it was given — ≈ 700 bytes, more than the
event's fields (an ``attempt_finished``: object 80 bytes, ``__dict__`` 464, fields set 728).
``EventBus.emit`` now swaps it for the class's shared set of every field before the sinks see
the event (≈ 0.1 µs an event; the event's fields, equality and JSON are unchanged; pydantic
copies the set before it changes one; ``tests/test_events.py``). An earlier session tried a
shared *empty* set and saw nothing in 6–10 rounds; interleaved A/Bs now (16 rounds each, then
12 and 8 with the checkouts' order reversed):
record + OTLP over no sinks 51.4 → 43.8 and 52.6 → 45.6 µs a task (paired ratio 1.207 → 1.170
and 1.202 → 1.182). Per thread after it: the engine's +23.5, the writer 7.1, span export 9.7.
``--repeats 15``, three runs, record + OTLP over no sinks 1.178×, 1.189× and 1.199× CPU
as ratios of medians (paired 1.184×, 1.190×, 1.198×; 1.223× and 1.211× the session before),
verdicts "met" (1.160–1.194), "undecided" (1.153–1.206) and "undecided" (1.167–1.234); their 45
rounds together: median 1.190, 90 % interval 1.180–1.194. No sinks 240–248 µs a task and
1.017–1.019× the bare client's wall, record + OTLP 1.005–1.011× wall, 90,180 of 90,180 spans
each. Then one ``--repeats 45`` run: 1.181× (paired 1.187×), 1.004× wall, no sinks 254 µs a
task, 270,540 of 270,540 spans; verdict "undecided" again (1.150–1.214: its rounds spread from
0.955 to 1.320). The centre is now ≈ 1.18–1.19, under the goal, but not yet with 90 %
confidence. ``bench_scale.py``: record + OTLP 286 µs a request against 254 without sinks (1.13×;
316 against 262, 1.21×, the session before), 1.017× ideal, RSS flat.

Measured the same session and not kept (interleaved processes, 20 rounds each, paired medians
over no sinks in µs a task):

* **The OTel sink's batches made on a thread of its own** (woken every 256 or 1,024 events; the
  engine's thread only queues): the engine's thread gains ≈ 19 µs a task and the new thread
  spends ≈ 13 (its batches run at the replayed speed) plus the hand-offs — 45.7 against 45.9
  before the fields-set change, 46.5 against 45.2 after it. Nothing.
* **The record's written events freed on the engine's thread** (the writer keeps the batch it
  wrote; the next ``handle`` drops it): 49.3 against 46.1, and in one process alternating the
  two per round (12 rounds) −2.8 with single rounds from −40 to +41 — noise. Not kept.
* **The record's writer every 20 ms** (the per-thread harness, 6 rounds): the writer 13.8 against
  8.6 (each wake ≈ 15 µs). Worse.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

import aiohttp
import orjson

from ddscope.engine import event_loop
from ddscope.engine.pipeline.model import Pipeline
from ddscope.engine.rows.output import DiscardingRowWriter
from ddscope.engine.scheduler import run_pipeline
from ddscope.events import EventBus, EventSink
from ddscope.exporters.otel.setup import build_otel_sink
from ddscope.exporters.otel.sink import OtelSink
from ddscope.mock import MockBehavior, MockServerProcess
from ddscope.record.jsonl import JsonlRecorder, RunReader

PARALLEL = 32
CPU_GOAL = 1.20  # issue 17: full instrumentation's CPU over no sinks
LATENCY_MS = 50.0
COLUMNS = ("summary", "analysis", "rewrite")
TESTS_DIR = Path(__file__).resolve().parent.parent / "tests"


def chain3(endpoint: str, records: int, parallel: int = PARALLEL) -> Pipeline:
    columns: list[dict[str, Any]] = [
        {"name": "topic", "type": "sampler", "sampler": "category", "values": ["a", "b", "c"]}
    ]
    previous = "topic"
    for name in COLUMNS:
        columns.append(
            {
                "name": name,
                "type": "llm_text",
                "model": "m",
                "prompt": f"{name}: {{{{ {previous} }}}}",
            }
        )
        previous = name
    model = {
        "alias": "m",
        "provider": "mock",
        "model": "mock-model",
        "max_parallel_requests": parallel,
    }
    return Pipeline.from_dict(
        {
            "name": "s5-chain-3",
            "providers": [{"name": "mock", "endpoint": endpoint}],
            "models": [model],
            "columns": columns,
            "run": {"num_records": records, "buffer_size": 100},
        }
    )


async def bare_client(url: str, requests: int) -> None:
    """The floor: the same number of requests, PARALLEL at a time, no engine."""
    body = orjson.dumps({"model": "mock-model", "messages": [{"role": "user", "content": "x"}]})
    headers = {"content-type": "application/json"}
    remaining = iter(range(requests))
    async with aiohttp.ClientSession(headers=headers) as session:

        async def worker() -> None:
            for _ in remaining:  # the shared iterator bounds the total
                async with session.post(f"{url}/chat/completions", data=body) as response:
                    orjson.loads(await response.read())

        await asyncio.gather(*(worker() for _ in range(PARALLEL)))


def in_memory_otel() -> tuple[OtelSink, Callable[[], list[str]]]:
    """The providers ``ddtrace run`` builds (otel_sdk: resource, span limits, sampler), with the
    SDK's in-memory span exporter behind a batch span processor and an in-memory reader."""
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from ddscope.exporters.otel.sdk import meter_provider, tracer_provider

    exporter = InMemorySpanExporter()
    traces = tracer_provider(BatchSpanProcessor(exporter, max_queue_size=100_000))
    reader = InMemoryMetricReader()
    metrics = meter_provider([reader])

    def finish() -> list[str]:
        traces.shutdown()
        reader.get_metrics_data()  # one collection, as a periodic reader would do
        return [] if exporter.get_finished_spans() else ["no spans reached the exporter"]

    return OtelSink(traces, metrics), finish


def run_variant(
    name: str, url: str, records: int, workdir: Path, otlp: str, loop: str
) -> dict[str, Any]:
    """One run of one variant: wall, CPU, record size, tasks, warnings. ddscope runs on ``loop``
    (``event_loop.run``, as ``ddtrace run``); the bare client on asyncio's own loop, what a plain
    aiohttp script gets, and ``bare_uvloop`` the same client on uvloop, for comparison."""
    record = workdir / f"{name}.jsonl"
    sinks: list[EventSink] = []
    finish: Callable[[], list[str]] = list
    if name != "no_sinks":
        sinks.append(JsonlRecorder(record))
    if name == "otel_memory":
        sink, finish = in_memory_otel()
        sinks.append(sink)
    elif name == "otel_otlp":
        otel, finish = build_otel_sink(otlp, "grpc", None)
        assert otel is not None
        sinks.append(otel)
    # The previous run's garbage (an in-memory exporter's spans, providers in reference
    # cycles) is collected now, not by a collection that happens to fall in this run.
    gc.collect()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    if name == "bare_aiohttp":
        asyncio.run(bare_client(url, records * len(COLUMNS)))
    elif name == "bare_uvloop":
        event_loop.run(bare_client(url, records * len(COLUMNS)), "uvloop")
    else:
        pipeline = chain3(url, records)
        bus = EventBus(sinks)
        event_loop.run(run_pipeline(pipeline, bus=bus, output=DiscardingRowWriter()), loop)
    warnings = finish()  # inside the measurement: the flush at the end is part of the cost
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    size = record.stat().st_size if record.exists() else 0
    tasks = record.read_bytes().count(b'"kind":"lease_started"') if size else 0
    spans = expected_spans(record) if name == "otel_otlp" else 0
    result = {"wall_s": wall, "cpu_s": cpu, "bytes": size, "tasks": tasks, "spans": spans}
    return {**result, "warnings": warnings}


SPAN_EVENTS = (
    "row_group_started",
    "salvage_started",
    "lease_started",
    "wait_started",
    "attempt_started",
    "cooldown_started",
)


def expected_spans(record: Path) -> int:
    """The spans the OTel sink makes for the run in ``record``: the run, one per domain, and
    one per interval-opening event (README: the span tree)."""
    reader = RunReader(record)
    try:
        count = 1 + len(reader.header.domains)
        count += sum(1 for event in reader if event.kind in SPAN_EVENTS)
    finally:
        reader.close()
    return count


def start_receiver() -> tuple[subprocess.Popen[str], str]:
    """An OTLP/gRPC receiver (tests/otlp_receiver.py) in a child process."""
    command = [sys.executable, __file__, "--serve-otlp-receiver"]
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def serve_receiver() -> None:
    sys.path.insert(0, str(TESTS_DIR))
    from otlp_receiver import GrpcReceiver

    with GrpcReceiver() as receiver:
        print(receiver.endpoint, flush=True)
        sys.stdin.read()  # until the parent closes our stdin
        print(json.dumps({"spans": len(receiver.spans()), "metrics": len(receiver.metrics())}))


VARIANTS = ("bare_aiohttp", "no_sinks", "record", "otel_memory", "otel_otlp")


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, float]]:
    out = {}
    # Task leases, counted in a record; the same workload in every ddscope variant.
    tasks = max(r["tasks"] for results in runs.values() for r in results) or None
    for name, results in runs.items():
        engine = not name.startswith("bare_")
        wall = statistics.median(r["wall_s"] for r in results)
        cpu = statistics.median(r["cpu_s"] for r in results)
        out[name] = {
            "wall_s": round(wall, 3),
            "cpu_s": round(cpu, 3),
            "cpu_us_per_task": round(cpu * 1e6 / tasks, 1) if tasks and engine else None,
            "record_bytes_per_task": (
                round(results[0]["bytes"] / tasks, 1) if tasks and results[0]["bytes"] else None
            ),
            "warnings": sum(len(r["warnings"]) for r in results),
        }
    return out


def ratios(figures: dict[str, dict[str, Any]]) -> dict[str, float]:
    base = figures["no_sinks"]
    bare = figures["bare_aiohttp"]
    out = {
        "no_sinks_wall_vs_bare": base["wall_s"] / bare["wall_s"],
        # the same requests: CPU per model task over the bare client's CPU per request
        "no_sinks_cpu_vs_bare": base["cpu_s"] / bare["cpu_s"],
    }
    for name in ("record", "otel_memory", "otel_otlp"):
        out[f"{name}_wall_vs_no_sinks"] = figures[name]["wall_s"] / base["wall_s"]
        out[f"{name}_cpu_vs_no_sinks"] = figures[name]["cpu_s"] / base["cpu_s"]
    return {k: round(v, 3) for k, v in out.items()}


def paired_ratios(runs: dict[str, list[dict[str, Any]]]) -> dict[str, float]:
    """The same ratios taken round by round (each variant over no sinks *of the same round*,
    seconds apart), then the median: the machine's speed drifts over minutes, and a ratio of
    medians taken from different rounds carries that drift; a paired ratio does not."""

    def paired(name: str, base: str, key: str) -> float:
        return round(statistics.median(per_round(runs, name, base, key)), 3)

    out = {
        "no_sinks_wall_vs_bare": paired("no_sinks", "bare_aiohttp", "wall_s"),
        "no_sinks_cpu_vs_bare": paired("no_sinks", "bare_aiohttp", "cpu_s"),
    }
    for name in ("record", "otel_memory", "otel_otlp"):
        out[f"{name}_wall_vs_no_sinks"] = paired(name, "no_sinks", "wall_s")
        out[f"{name}_cpu_vs_no_sinks"] = paired(name, "no_sinks", "cpu_s")
    return out


def per_round(runs: dict[str, list[dict[str, Any]]], name: str, base: str, key: str) -> list[float]:
    """``name``'s ``key`` over ``base``'s, round by round."""
    return [a[key] / b[key] for a, b in zip(runs[name], runs[base], strict=True)]


def by_round(runs: dict[str, list[dict[str, Any]]], tasks: int) -> dict[str, list[float]]:
    """The goals' figures round by round, so the spread behind each median shows: no sinks' CPU
    per task, and full instrumentation's CPU over no sinks of the same round."""
    return {
        "no_sinks_cpu_us_per_task": [round(r["cpu_s"] * 1e6 / tasks, 1) for r in runs["no_sinks"]],
        "otel_otlp_cpu_vs_no_sinks": [
            round(ratio, 3) for ratio in per_round(runs, "otel_otlp", "no_sinks", "cpu_s")
        ],
    }


def median_interval(values: list[float], confidence: float = 0.9) -> tuple[float, float] | None:
    """A distribution-free interval for the median of what ``values`` were drawn from: the
    k-th smallest to the k-th largest value, with the largest k whose coverage, 1 − 2·P(X < k)
    for X ~ Binomial(n, ½), is at least ``confidence``; None when even the smallest to the
    largest falls short (3 rounds cover 75 %, 5 cover 94 %)."""
    ordered = sorted(values)
    n = len(ordered)
    best = None
    below = 0.0  # P(X < k)
    for k in range(1, n // 2 + 1):
        below += math.comb(n, k - 1) / 2**n
        if 1 - 2 * below < confidence:
            break
        best = (ordered[k - 1], ordered[n - k])
    return best


def goal_verdict(values: list[float], goal: float, confidence: float = 0.9) -> str:
    """Whether rounds ``values`` (a figure whose goal is ≤ ``goal``) decide the goal at
    ``confidence``: "met" when the median's interval is at or below it, "not met" when above,
    else "undecided", with the interval."""
    interval = median_interval(values, confidence)
    if interval is None:
        return f"undecided: {len(values)} rounds cannot give a {confidence * 100:.0f} % interval"
    low, high = interval
    span = f"{confidence * 100:.0f} % interval of the median {low:.3f}–{high:.3f}"
    if high <= goal:
        return f"met ({span})"
    if low > goal:
        return f"not met ({span})"
    return f"undecided ({span}; more rounds narrow it)"


def measure(
    url: str, records: int, repeats: int, otlp: str, loop: str
) -> dict[str, list[dict[str, Any]]]:
    """Every variant ``repeats`` times, round-robin, so drift on this noisy machine is shared;
    each round starts one variant later, so no variant always runs after the same one."""
    variants = VARIANTS if loop == "asyncio" else (VARIANTS[0], "bare_uvloop", *VARIANTS[1:])
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    asyncio.run(bare_client(url, PARALLEL * 4))  # warm-up: connections, lazy imports
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(repeats):
            shift = repeat % len(variants)
            for name in (*variants[shift:], *variants[:shift]):
                r = run_variant(name, url, records, Path(tmp), otlp, loop)
                runs[name].append(r)
                line = f"wall {r['wall_s']:6.2f} s  CPU {r['cpu_s']:6.2f} s"
                print(f"  run {repeat + 1} {name:12s} {line}", flush=True)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--loop",
        choices=get_args(event_loop.LoopChoice),
        default="auto",
        help="ddscope's event loop (default: as ddtrace run, uvloop where installed)",
    )
    parser.add_argument("--serve-otlp-receiver", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_otlp_receiver:
        return serve_receiver()
    args.loop, _ = event_loop.chosen_loop(args.loop)
    receiver, otlp = start_receiver()
    try:
        with MockServerProcess(MockBehavior(latency_ms=LATENCY_MS)) as server:
            runs = measure(server.base_url, args.records, args.repeats, otlp, args.loop)
    finally:
        received = stop_receiver(receiver)
    received["expected_spans"] = sum(r["spans"] for r in runs.get("otel_otlp", []))
    rounds = by_round(runs, args.records * len(COLUMNS))
    report(args, summarize(runs), paired_ratios(runs), rounds, received)


def stop_receiver(receiver: subprocess.Popen[str]) -> dict[str, Any]:
    """Stops the receiver; what it got: {"spans": N, "metrics": names}."""
    assert receiver.stdin is not None and receiver.stdout is not None
    receiver.stdin.close()
    received: dict[str, Any] = json.loads(receiver.stdout.readline() or "{}")
    receiver.wait(10)
    return received


def report(
    args: argparse.Namespace,
    figures: dict[str, dict[str, Any]],
    paired: dict[str, float],
    rounds: dict[str, list[float]],
    received: dict[str, Any],
) -> None:
    ideal = args.records * len(COLUMNS) * LATENCY_MS / 1000 / PARALLEL
    print(f"\nS5: chain-3, {args.records} records, {PARALLEL} parallel, {LATENCY_MS:g} ms endpoint")
    print(f"ideal {ideal:.2f} s; medians of {args.repeats} runs; ddscope on {args.loop}")
    for name, f in figures.items():
        line = f"{name:13s} wall {f['wall_s']:6.2f} s  CPU {f['cpu_s']:6.2f} s"
        if f["cpu_us_per_task"]:
            line += f"  {f['cpu_us_per_task']:6.0f} µs CPU/task"
        if f["record_bytes_per_task"]:
            line += f"  {f['record_bytes_per_task']:4.0f} B/task in run.jsonl"
        print(line)
    r = ratios(figures)
    print(f"no sinks / bare client, wall: {r['no_sinks_wall_vs_bare']:.3f}  (goal ≤ 1.05)")
    print(f"no sinks CPU per task: {figures['no_sinks']['cpu_us_per_task']:.0f} µs  (goal ≤ 350)")
    bare_us = figures["bare_aiohttp"]["cpu_s"] * 1e6 / (args.records * len(COLUMNS))
    print(
        f"  = {r['no_sinks_cpu_vs_bare']:.2f}× the bare client's {bare_us:.0f} µs a request "
        f"(paired by round {paired['no_sinks_cpu_vs_bare']:.2f}×; the goal was set when the bare "
        "client cost 200 µs: 1.75×)"
    )
    for name in ("record", "otel_memory", "otel_otlp"):
        wall, cpu = r[f"{name}_wall_vs_no_sinks"], r[f"{name}_cpu_vs_no_sinks"]
        pw, pc = paired[f"{name}_wall_vs_no_sinks"], paired[f"{name}_cpu_vs_no_sinks"]
        print(f"{name:13s} / no sinks: wall {wall:.3f}  CPU {cpu:.3f}", end="")
        print(f"   (paired by round: wall {pw:.3f}  CPU {pc:.3f})")
    print("goal, full instrumentation over no sinks: wall ≤ 1.10, CPU ≤ 1.20; ≤ 1 KB/task")
    print(f"by round: no sinks µs CPU/task {rounds['no_sinks_cpu_us_per_task']}")
    print(f"          otel_otlp / no sinks CPU {rounds['otel_otlp_cpu_vs_no_sinks']}")
    verdict = goal_verdict(rounds["otel_otlp_cpu_vs_no_sinks"], CPU_GOAL)
    print(f"          CPU goal ≤ {CPU_GOAL:.2f} by round: {verdict}")
    got, expected = received.get("spans"), received.get("expected_spans")
    verdict = "every span delivered" if got == expected else "SPANS MISSING"
    print(f"receiver got {got} spans of {expected} expected ({verdict}), ", end="")
    print(f"{received.get('metrics')} metric names")
    line = {
        "benchmark": "bench_s5_overhead",
        "records": args.records,
        "parallel": PARALLEL,
        "latency_ms": LATENCY_MS,
        "repeats": args.repeats,
        "loop": args.loop,
        "ideal_s": round(ideal, 3),
        "variants": figures,
        "ratios": r,
        "paired_ratios": paired,
        "by_round": rounds,
        "otel_otlp_cpu_interval_90": median_interval(rounds["otel_otlp_cpu_vs_no_sinks"]),
        "received": received,
    }
    print("JSON " + json.dumps(line))


if __name__ == "__main__":
    main()
