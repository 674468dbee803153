import json,sys
r=json.load(open(sys.argv[1])); view=sys.argv[2] if len(sys.argv)>2 else 'per_side'
T=['2048','4096','8192','16384','32768']
print(f"| benchmark | counter | n | p50 | p90 | p99 | max | "+" | ".join(f">{t}" for t in T)+" |")
print("|---|---|--:|--:|--:|--:|--:|"+"--:|"*len(T))
for b in ['rm-bench','rmb','judgebench']:
    for c in ['approx-bpe','approx-wp','exact-fixture']:
        s=r[b][c][view]; n=s['n']
        print(f"| {b} | {c} | {n} | {s['p50']} | {s['p90']} | {s['p99']} | {s['max']} | "+" | ".join(f"{100*s['over'][t]/n:.2f}% ({s['over'][t]})" for t in T)+" |")
