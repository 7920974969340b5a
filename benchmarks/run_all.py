"""`make bench`: every benchmark in turn (each starts and stops its own services)."""
import subprocess
import sys

SCRIPTS = ["benchmarks.emulator_bench", "benchmarks.local_loop", "benchmarks.intake_bench",
           "benchmarks.monitor_bench", "benchmarks.split_merge_bench", "benchmarks.report_html_20k",
           "benchmarks.sweep_bench",
           # issue 12, scale past one invocation (the last is the longest: 100,000 tasks end to end)
           "benchmarks.scale_quota_bench", "benchmarks.scale_runs_bench", "benchmarks.scale_tasks_bench"]

if __name__ == "__main__":
    failed = []
    for module in SCRIPTS:
        print(f"\n=== {module}", flush=True)
        if subprocess.run([sys.executable, "-m", module, *sys.argv[1:]]).returncode != 0:
            failed.append(module)
    sys.exit(f"failed: {', '.join(failed)}" if failed else 0)
