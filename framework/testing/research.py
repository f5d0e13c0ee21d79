"""The demo's scripted research session: dispatch a pruning sweep and a Frank-Wolfe run with
``remote-run``, then write the report from the runs' own output.

The scripted model only chooses the commands; every number in the report comes from the jobs.
The job scripts write ``metrics.json`` into ``$RUN_DIR``, where the broker reads it for the
ledger, and end their output with one ``RESULT {json}`` line, which ``jobs/report.py`` reads back
with ``remote-run logs`` (the agent cannot see the run directories; they live on the host).
"""

from __future__ import annotations

from typing import Any

METHODOLOGY_HEADING = "How research is done in this repository"
PROMPT = (
    "Follow the plan in TODO.md: compare magnitude, Wanda and SparseGPT at 50% sparsity on the "
    "tiny model, run Frank-Wolfe on the simplex, dispatch every run with remote-run, and report."
)
PRUNING_METHODS = ("magnitude", "wanda", "sparsegpt")
PRUNING_GROUP = "prune50"
FW_GROUP = "fw-simplex"
FW_ITERATIONS = 1000

PRUNE_JOB = f'''\
"""E001: one method of the 50% pruning sweep on the tiny LM; the array index picks the method."""
import json
import os
import runpy
import sys

METHODS = {list(PRUNING_METHODS)!r}
method = METHODS[int(sys.argv[1])]
out = os.environ["RUN_DIR"]
sys.argv = ["experiments.pruning", "run", "--model", "tiny", "--method", method,
            "--sparsity", "0.5", "--threads", "1", "--out", out]
try:
    runpy.run_module("experiments.pruning", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    if exc.code:
        raise
metrics = json.load(open(os.path.join(out, "metrics.json")))
result = {{"method": method, "perplexity": metrics["perplexity"],
          "dense_perplexity": metrics["dense_perplexity"], "sparsity": metrics["sparsity"]}}
print("RESULT " + json.dumps(result))
'''

FW_JOB = f'''\
"""E002: Frank-Wolfe, open-loop step 2/(t+2), on the simplex with an interior optimum."""
import json
import os
import runpy
import sys

out = os.environ["RUN_DIR"]
sys.argv = ["experiments.optimization", "fw-rates", "--set", "simplex", "--step", "open-loop",
            "--optimum", "interior", "--dim", "50", "--iters", "{FW_ITERATIONS}", "--digits", "0",
            "--out", out]
try:
    runpy.run_module("experiments.optimization", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    if exc.code:
        raise
path = os.path.join(out, "metrics.json")
metrics = json.load(open(path))
last = metrics["log"][-1]
# The ledger keeps the top-level numbers of metrics.json: put the final gaps there.
metrics.update(final_fw_gap=last["fw_gap"], final_primal_gap=last["primal_gap"])
json.dump(metrics, open(path, "w"))
result = {{"iterations": metrics["iterations_run"], "fw_gap": last["fw_gap"],
          "primal_gap": last["primal_gap"]}}
print("RESULT " + json.dumps(result))
'''

REPORT_JOB = r'''"""Write the finished runs into report.tex and TODO.md, numbers read from the runs' output."""
import json
import subprocess


def remote_run(*args):
    return subprocess.run(["remote-run", *args], check=True, capture_output=True, text=True).stdout


def result(run):
    lines = [line for line in remote_run("logs", run["run_id"]).splitlines()
             if line.startswith("RESULT ")]
    return json.loads(lines[-1][len("RESULT "):])


def cite(run):
    return r"\run{" + run["run_id"] + "}"


runs = [r for r in json.loads(remote_run("list", "--json")) if r["state"] == "finished"]
pruning = sorted((r for r in runs if r["name"] == "@PRUNING@"), key=lambda r: r["array_index"])
fw = [r for r in runs if r["name"] == "@FW@"][-1]
rows, dense = [], None
for run in pruning:
    res = result(run)
    dense = res["dense_perplexity"]
    rows.append(f"{res['method']} & {res['perplexity']:.2f} & {cite(run)} " + r"\\")
    print(f"{res['method']:<10} perplexity {res['perplexity']:.2f}  (run {run['run_id']})")
fw_result = result(fw)
print(f"Frank-Wolfe gap {fw_result['fw_gap']:.6f} after {fw_result['iterations']} iterations")
section = "\n".join([
    r"\subsection{E001: magnitude, Wanda and SparseGPT at 50\% sparsity}",
    f"The dense tiny model has test perplexity {dense:.2f} ({cite(pruning[0])}).",
    r"\begin{table}[h]",
    r"\centering",
    r"\begin{tabular}{lrl}",
    r"\toprule",
    r"Method & Perplexity & Run \\",
    r"\midrule",
    *rows,
    r"\bottomrule",
    r"\end{tabular}",
    r"\caption{Test perplexity after pruning half of each row's weights (lower is better).}",
    r"\end{table}",
    "",
    r"\subsection{E002: Frank-Wolfe on the simplex}",
    f"After {fw_result['iterations']} open-loop steps the Frank-Wolfe gap is "
    f"{fw_result['fw_gap']:.6f} and the primal gap {fw_result['primal_gap']:.8f} ({cite(fw)}).",
    "",
])
tex = open("report.tex").read()
marker = "\\section{Results}\n"
open("report.tex", "w").write(tex.replace(marker, marker + section, 1))
ids = " ".join(r["run_id"] for r in pruning)
with open("TODO.md", "a") as todo:
    todo.write(f"- [x] E001 pruning at 50%: magnitude, Wanda, SparseGPT (runs {ids})\n")
    todo.write(f"- [x] E002 Frank-Wolfe on the simplex (run {fw['run_id']})\n")
'''.replace("@PRUNING@", PRUNING_GROUP).replace("@FW@", FW_GROUP)

COMMIT = (
    "git add jobs/prune.py jobs/fw.py jobs/report.py report.tex TODO.md && "
    "git -c user.name=agent -c user.email=agent@example.invalid commit -q "
    "-m 'exp(E001): magnitude vs Wanda vs SparseGPT at 50% on tiny; E002 Frank-Wolfe on the simplex' "
    "&& git log -1 --format=%s"
)


def demo_script(python: str) -> dict[str, Any]:
    """The scripted session; ``python`` is the interpreter the jobs run with (it has torch)."""
    return {
        "description": "demo: dispatch a pruning sweep and Frank-Wolfe with remote-run, report, commit",
        "expect": {"context_contains": [METHODOLOGY_HEADING]},
        "turns": [
            {
                "text": "I will read the methodology and look at the compute I can dispatch to.",
                "actions": [{"bash": "head -n 12 CLAUDE.md && remote-run nodes"}],
            },
            {
                "expect": {"tool_result_contains": [METHODOLOGY_HEADING]},
                "text": "Writing the job scripts and the report writer.",
                "actions": [
                    {"write": {"path": "jobs/prune.py", "content": PRUNE_JOB}},
                    {"write": {"path": "jobs/fw.py", "content": FW_JOB}},
                    {"write": {"path": "jobs/report.py", "content": REPORT_JOB}},
                ],
            },
            {
                "text": "Dispatching the Frank-Wolfe run.",
                "actions": [
                    {"bash": f"remote-run --wait --name {FW_GROUP} -- {python} jobs/fw.py"}
                ],
            },
            {
                "expect": {"tool_result_contains": ["finished"]},
                "text": "Dispatching the pruning sweep as a job array, one method per task.",
                "actions": [
                    {
                        "bash": f"remote-run --wait --array 0-{len(PRUNING_METHODS) - 1} "
                        f"--name {PRUNING_GROUP} -- {python} jobs/prune.py {{index}}"
                    }
                ],
            },
            {
                "expect": {"tool_result_excludes": ["failed"]},
                "text": "All runs finished; writing the report from their output.",
                "actions": [{"bash": "python3 jobs/report.py"}],
            },
            {
                "expect": {"tool_result_contains": ["Frank-Wolfe gap"]},
                "actions": [{"bash": COMMIT}],
            },
            {
                "expect": {"tool_result_contains": ["exp(E001)"]},
                "text": "Done: the runs are in the ledger, the report cites them, and the work is "
                "committed.",
            },
        ],
    }
