#!/usr/bin/env python3
"""Markdown tables from lengths.json (measure.py output) and the eval report.json files."""
import json, os
T = ['2048', '4096', '8192', '16384', '32768']
BENCHES = ['rm-bench', 'rmb', 'judgebench']
NAMES = {'approx-bpe': 'fixture BPE (vocab 512) + 10/msg', 'approx-wp': 'MiniLM WordPiece (vocab 30522) + 10/msg',
         'exact-fixture': 'exact: qwen3_rm_chat template + fixture BPE'}
r = json.load(open('lengths.json'))

def over(s, t):
    n = s['n']; k = s['over'][t]
    return f"{100*k/n:.2f}% ({k})"

def length_table(view, counters=('approx-bpe', 'approx-wp', 'exact-fixture')):
    out = ["| benchmark | tokenizer / count | inputs | p50 | p90 | p99 | max | " + " | ".join(f">{t}" for t in T) + " |",
           "|---|---|--:|--:|--:|--:|--:|" + "--:|" * len(T)]
    for b in BENCHES:
        for c in counters:
            s = r[b][c][view]
            out.append(f"| {b} | {NAMES[c]} | {s['n']} | {s['p50']} | {s['p90']} | {s['p99']} | {s['max']} | " + " | ".join(over(s, t) for t in T) + " |")
    return "\n".join(out)

def subset_table():
    out = ["| benchmark | subset | inputs (sides) | WordPiece p50 / p99 / max | WP >4096 | WP >8192 | exact-fixture p50 / p99 / max | fixture >4096 | >8192 | >16384 |",
           "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for b in BENCHES:
        for sub, s in r[b]['approx-wp']['by_subset_per_side'].items():
            e = r[b]['exact-fixture']['by_subset_per_side'][sub]
            out.append(f"| {b} | {sub} | {s['n']} | {s['p50']} / {s['p99']} / {s['max']} | {s['over']['4096']} | {s['over']['8192']} | {e['p50']} / {e['p99']} / {e['max']} | {e['over']['4096']} | {e['over']['8192']} | {e['over']['16384']} |")
    return "\n".join(out)

def chars_table():
    out = ["| benchmark | distinct inputs | chars p50 | p90 | p99 | max |", "|---|--:|--:|--:|--:|--:|"]
    for b in BENCHES:
        s = r[b]['chars']
        out.append(f"| {b} | {s['n']} | {s['p50']} | {s['p90']} | {s['p99']} | {s['max']} |")
    return "\n".join(out)

def emulated_table(extra=None):
    out = ["| layout | distinct inputs | synpref sequences | " + " | ".join(f"N={t}: prompt-only / into reply" for t in T) + " |",
           "|---|--:|--:|" + "--:|" * len(T)]
    rr = dict(r)
    if extra:
        rr.update(json.load(open(extra)))
    for b, x in rr.items():
        tr = x['exact-fixture-truncation-per-synpref-sequence']
        out.append(f"| {b} | {x['distinct_inputs']} | {x['synpref_sequences']} | " + " | ".join(f"{tr[t]['prompt_truncated']} / {tr[t]['response_truncated']}" for t in T) + " |")
    return "\n".join(out)

def product_table(runs):
    out = ["| layout | --max-tokens | sequences computed | prompt_truncated | response_truncated | Python emulation (prompt / reply) | sequence_tokens | elapsed_s |",
           "|---|--:|--:|--:|--:|--:|--:|--:|"]
    rr = dict(r); rr.update(json.load(open('lengths-rmb-samples.json')))
    for b, n, d in runs:
        rep = json.load(open(os.path.join(d, 'report.json')))
        bb = rep['benchmarks'][0]; c = rep['scoring']['compute']
        em = rr[b]['exact-fixture-truncation-per-synpref-sequence'][str(n)]
        out.append(f"| {b} | {n} | {bb['replies']['sequences_scored']} | {bb['truncations']['prompt_truncated']} | {bb['truncations']['response_truncated']} | {em['prompt_truncated']} / {em['response_truncated']} | {c['sequence_tokens']} | {rep['elapsed_s']:.1f} |")
    return "\n".join(out)

if __name__ == '__main__':
    import sys
    print("## per side\n" + length_table('per_side'))
    print("\n## per comparison (max of the two sides)\n" + length_table('per_comparison_max_side'))
    print("\n## per distinct input\n" + length_table('per_distinct_input'))
    print("\n## subsets\n" + subset_table())
    print("\n## chars\n" + chars_table())
    print("\n## emulated\n" + emulated_table('lengths-rmb-samples.json'))
    runs = [('judgebench', 4096, '/tmp/tl-eval-judgebench-4096'), ('judgebench', 16384, '/tmp/tl-eval-judgebench-16384'),
            ('rm-bench', 4096, '/tmp/tl-eval-rm-bench-4096'), ('rm-bench', 16384, '/tmp/tl-eval-rm-bench-16384'),
            ('rmb-sample50', 4096, '/tmp/tl-eval-rmb-sample50-4096'), ('rmb-sample50', 8192, '/tmp/tl-eval-rmb-sample50-8192'),
            ('rmb-sample50', 16384, '/tmp/tl-eval-rmb-sample50-16384')]
    print("\n## product\n" + product_table(runs))
