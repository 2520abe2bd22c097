"""The bit-flip bar on the zoo's MNIST CNN, through the `bitflip` and `bitflip-random` threats.

    ROBENCH_DATA=... python perf/bitflip.py [--model mnist-small-cnn] [--n 1000] [--flips 60]
        [--searches ce:10,ce:all,margin:10,margin:all] [--random-flips 100] [--seeds 5] [--figure bitflip.png]

On the first `n` MNIST test points it prints: accuracy before and after 8-bit quantisation; for each
search (loss:k) the flips the progressive bit search needs to bring accuracy to <= 11% (budget `flips`)
and its mean time per iteration; the median accuracy (over `seeds` runs) after `random-flips` random
flips; and it draws accuracy against flips (the first search that reaches the target, else the first,
beside the random runs). The bar: quantisation costs < 0.2 points; BFA reaches <= 11% in <= 35 flips;
100 random flips cost < 1 point.
"""
from __future__ import annotations

import argparse
import time

import torch

from robench import zoo
from robench.data import load_dataset
from robench.plots import bitflip_curve
from robench.threats import build_threat

TARGET = 0.11


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mnist-small-cnn")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--flips", type=int, default=60)
    parser.add_argument("--searches", default="ce:10,ce:all,margin:10,margin:all")
    parser.add_argument("--random-flips", type=int, default=100)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0, help="seed of the threats' generator")
    parser.add_argument("--figure", default="bitflip.png")
    args = parser.parse_args()

    model = zoo.get(args.model).load(progress=False)
    data = load_dataset("mnist", "test").select(n=args.n)
    print(f"model {args.model}, first {args.n} MNIST test points, torch threads {torch.get_num_threads()}")

    curves = {}
    for search in args.searches.split(","):
        loss, k = search.split(":")
        threat = build_threat(f"bitflip:dataset=mnist,flips={args.flips},target={TARGET},k={k},loss={loss}")
        start = time.perf_counter()
        m = threat.summarize(threat.evaluate_shard(model, data.x, data.y, torch.Generator().manual_seed(args.seed)))
        if not curves:
            clean, quant = m["clean_accuracy"]["value"], m["quantized_accuracy"]["value"]
            print(f"accuracy fp32 {clean:.2%}, 8-bit {quant:.2%}: quantisation costs {100 * (clean - quant):.2f} "
                  f"points (bar < 0.2)")
        reached = m["flips_to_target"]
        print(f"BFA loss={loss:6s} k={k:>3s}: flips to <= {TARGET:.0%}: "
              f"{reached if reached is not None else f'not reached in {args.flips}'} (bar <= 35); accuracy after "
              f"{m['flips']} flips {m['final_accuracy']['value']:.2%}; Hamming distance {m['hamming_distance']}; "
              f"{m['seconds_per_iteration']:.3f} s per iteration ({time.perf_counter() - start:.0f} s in all)")
        curves[search] = (reached, [(p["flips"], p["accuracy"]) for p in m["accuracy_per_flip"]])

    threat = build_threat(f"bitflip-random:flips={args.random_flips},seeds={args.seeds}")
    out = threat.evaluate_shard(model, data.x, data.y, torch.Generator().manual_seed(args.seed))
    r = threat.summarize(out)
    print(f"random: median accuracy after {args.random_flips} flips over {args.seeds} seeds "
          f"{r['median_accuracy']:.2%} (per seed {', '.join(f'{a:.1%}' for a in r['accuracy_per_seed'])}): "
          f"costs {100 * r['median_drop']:.2f} points (bar < 1)")

    shown = next((s for s, (reached, _) in curves.items() if reached is not None), next(iter(curves)))
    runs = [[(i + 1, c / args.n) for i, c in enumerate(row)] for row in out["correct"]]
    path = bitflip_curve(curves[shown][1], runs, args.figure, start=r["quantized_accuracy"]["value"], target=TARGET,
                         title=f"{args.model}: BFA ({shown}) vs random flips")
    print(f"figure: {path}")


if __name__ == "__main__":
    main()
