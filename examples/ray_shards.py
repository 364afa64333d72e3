#!/usr/bin/env python3
"""Run an embjob text job as shard tasks on a Ray cluster, then merge them into one run.

Each task runs `embjob run JOB --shard i/N` (its share of the input files, written under <output.dir>/shards/);
Ray places the tasks and retries one whose process dies or that fails on its own (a killed node, an OOM kill).
Errors in the config or the data (embjob's exit codes 2 and 3) are not retried: they would fail again. When every
shard is there, `embjob merge JOB` builds the vocabulary, fits PCA, evaluates and commits a normal run (`latest`).
A retried task rewrites its shard with the same bytes, so the merged run equals the single run.

    pip install ray
    python examples/ray_shards.py pipelines/news.toml --shards 64 --embjob target/release/embjob

On a cluster, pass --address (or set RAY_ADDRESS); every node needs the embjob binary, the input, the model folder
and the output folder at the same paths (a shared file system).
"""

import argparse
import os
import signal
import subprocess
import sys
import time

import ray

# embjob's exit codes for a wrong config and unusable input: the same task would fail again.
NOT_RETRIED = (2, 3)


class ShardFailed(Exception):
    """A shard task failed for a reason a retry may fix (killed, out of memory, a write error)."""


class ShardRefused(Exception):
    """embjob refused the shard (config or input error): not retried."""


@ray.remote(max_retries=3, retry_exceptions=[ShardFailed])
def run_shard(embjob, config, index, count, extra, kill_marker):
    command = [*embjob, "run", config, "--quiet", "--shard", f"{index}/{count}", *extra]
    # Fault drill (--kill-first-attempt): the first attempt of this shard is killed part-way, as a lost node would
    # be, and Ray retries it.
    if kill_marker is not None and not os.path.exists(kill_marker):
        open(kill_marker, "w").close()
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        raise ShardFailed(f"shard {index}/{count}: killed (fault drill), exit {proc.returncode}")
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode in NOT_RETRIED:
        raise ShardRefused(f"shard {index}/{count}: exit {result.returncode}: {result.stderr.strip()}")
    if result.returncode != 0:
        raise ShardFailed(f"shard {index}/{count}: exit {result.returncode}: {result.stderr.strip()}")
    return index


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="the pipeline file (TOML) of a text job")
    parser.add_argument("--shards", type=int, default=8, help="how many shard tasks (default 8)")
    parser.add_argument("--embjob", default="embjob", help="the embjob command, e.g. target/release/embjob")
    parser.add_argument("--address", default=None, help="a Ray cluster to join (default: RAY_ADDRESS, else a local one)")
    parser.add_argument("--output", default=None, help="passed to embjob as --output")
    parser.add_argument("--backend", default=None, choices=["auto", "cpu", "gpu"], help="passed to embjob as --backend")
    parser.add_argument("--num-cpus-per-task", type=float, default=1.0, help="Ray CPUs each task reserves")
    parser.add_argument(
        "--kill-first-attempt", type=int, default=None, metavar="I",
        help="fault drill: kill the first attempt of shard I part-way (Ray retries it)",
    )
    args = parser.parse_args()

    extra = []
    if args.output:
        extra += ["--output", os.path.abspath(args.output)]
    if args.backend:
        extra += ["--backend", args.backend]
    embjob = args.embjob.split()
    if os.path.sep in embjob[0]:
        embjob[0] = os.path.abspath(embjob[0])
    config = os.path.abspath(args.config)

    ray.init(address=args.address, include_dashboard=False, log_to_driver=False)
    started = time.time()
    tasks = []
    for i in range(args.shards):
        marker = None
        if args.kill_first_attempt == i:
            marker = os.path.join(os.path.dirname(config), f".ray-drill-{os.getpid()}-{i}")
        tasks.append(
            run_shard.options(num_cpus=args.num_cpus_per_task).remote(embjob, config, i, args.shards, extra, marker)
        )
    try:
        done = ray.get(tasks)
    except ray.exceptions.RayTaskError as e:
        print(f"a shard failed: {e.cause if hasattr(e, 'cause') else e}", file=sys.stderr)
        return 1
    finally:
        if args.kill_first_attempt is not None:
            drill = os.path.join(os.path.dirname(config), f".ray-drill-{os.getpid()}-{args.kill_first_attempt}")
            if os.path.exists(drill):
                os.remove(drill)
    print(f"{len(done)} shards in {time.time() - started:.1f} s", file=sys.stderr)
    ray.shutdown()
    merged = subprocess.run([*embjob, "merge", config, *extra])
    return merged.returncode


if __name__ == "__main__":
    sys.exit(main())
