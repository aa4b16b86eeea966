"""An interrupt that arrives while a library object's __del__ runs (as while a model loads) is acted on right
after it, as exit 130 with the usual line: never "Exception ignored in: <function ...__del__>", never lost."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import os, signal, sys, time
    from p2p_cli.files import interrupts

    class Group:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # the signal lands inside this cleanup
                sum(range(100))

    start = time.perf_counter()
    try:
        with interrupts.handlers():
            Group()  # collected at once: __del__ runs here
            while time.perf_counter() - start < 5:
                time.sleep(0.001)
            print("not interrupted")
    except interrupts.Interrupted as err:
        print(f"interrupted {err.code} after {time.perf_counter() - start:.2f} s")
""")


def test_an_interrupt_inside_a_del_is_raised_after_it():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert "Exception ignored" not in done.stderr, done.stderr
    assert done.stdout.startswith("interrupted 130 after "), done.stdout + done.stderr
    assert float(done.stdout.split()[3]) < 2


@pytest.mark.slow  # 6 s (a process that imports torch); the mechanism is checked above in the default run
def test_edit_interrupted_while_loading_prints_one_line(tmp_path):
    """SIGINT inside a __del__ while the model loads: exit 130, the usual line, no traceback."""
    script = textwrap.dedent(f"""
        import os, signal, sys
        import p2p_cli.models as models

        class Group:
            def __del__(self):
                os.kill(os.getpid(), signal.SIGINT)
                for _ in range(1000):
                    sum(range(100))

        real = models.load_model
        def loading(*args, **kwargs):
            Group()
            import time
            time.sleep(2)
            return real(*args, **kwargs)
        models.load_model = loading
        from p2p_cli.cli.main import main
        sys.argv = ["p2p", "edit", "--prompt", "a big [red->blue] circle", "--out", {str(tmp_path / "out")!r},
                    "--steps", "2", "--quiet"]
        main()
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 130, done.stderr
    assert "Exception ignored" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: interrupted (SIGINT)")
