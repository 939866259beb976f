"""scenimefy_jax/kernels/cpu_memory.py: the second execution of a program reuses the first one's
temporaries instead of mapping them afresh (counted as minor page faults, getrusage)."""
import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# A program with a 64 MiB temporary (the product a @ b, consumed by the second product): each call
# of the default setup maps it again, >= 16,384 faults of 4 KiB pages.
_PROGRAM = """
    import resource, sys
    from scenimefy_jax.kernels import cpu_memory
    print("settings", cpu_memory.keep_freed_memory() if sys.argv[1] == "keep" else {})
    import jax, jax.numpy as jnp
    x = jnp.ones((4096, 4096), jnp.float32)
    f = jax.jit(lambda a: jnp.tanh(jnp.tanh(a @ a) @ a)[0, 0])
    f(x).block_until_ready()
    faults = []
    for _ in range(3):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        f(x).block_until_ready()
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    from jax._src import xla_bridge
    print("async", xla_bridge._CPU_ENABLE_ASYNC_DISPATCH.value)
    print("faults", min(faults))
"""


def _run(mode, **env):
    run = subprocess.run([sys.executable, "-c", textwrap.dedent(_PROGRAM), mode], cwd=ROOT,
                         env={**os.environ, "JAX_PLATFORMS": "cpu", **env}, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = dict(line.split(" ", 1) for line in run.stdout.splitlines())
    return lines, int(lines["faults"])


def test_kept_memory_is_reused_between_executions():
    lines, kept = _run("keep")
    assert "'applied': True" in lines["settings"] and "'inline_cpu_dispatch': True" in lines["settings"]
    assert lines["async"] == "False"
    _, default = _run("default")
    assert default >= 16384, default  # the check can fail: the default maps the temporary each call
    assert kept < 1000, kept


def test_switched_off_by_the_environment():
    lines, faults = _run("keep", SCENIMEFY_JAX_KEEP_CPU_MEMORY="0")
    assert "'applied': False" in lines["settings"] and "SCENIMEFY_JAX_KEEP_CPU_MEMORY=0" in lines["settings"]
    assert lines["async"] == "True"
    assert faults >= 16384
