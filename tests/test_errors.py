"""run_cli (utils/runtime/entry.py): every failure of a script becomes one line on stderr and a non-zero exit."""
import subprocess
import sys
import textwrap

from conftest import REPO


def run_script(tmp_path, body, *argv):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from utils.errors import SSTNetError
        from utils.runtime.entry import run_cli
        {textwrap.indent(textwrap.dedent(body), " " * 8).strip()}
        run_cli(main)
    """))
    return subprocess.run([sys.executable, str(script), *argv], capture_output=True, text=True)


def test_our_error_is_one_line_with_exit_2(tmp_path):
    result = run_script(tmp_path, """
        def main(argv):
            raise SSTNetError("data.json: 'images' is missing")
    """)
    assert result.returncode == 2 and result.stderr == "error: data.json: 'images' is missing\n"


def test_unexpected_error_names_its_place_and_debug_shows_the_traceback(tmp_path):
    body = """
        def main(argv):
            return {}["key"]
    """
    result = run_script(tmp_path, body)
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: KeyError: 'key' (at script.py:") and "--debug" in result.stderr
    result = run_script(tmp_path, body, "--debug")
    assert result.returncode == 1 and "Traceback (most recent call last)" in result.stderr


def test_interrupt_inside_a_constructor_prints_no_traceback(tmp_path):
    """An interrupt that lands in a constructor leaves an object whose __del__ fails at exit (tqdm does this)."""
    result = run_script(tmp_path, """
        class HalfBuilt:
            def __init__(self):
                raise KeyboardInterrupt
            def __del__(self):
                self.never_set
        def main(argv):
            HalfBuilt()
    """)
    assert result.returncode == 130 and result.stderr == "interrupted\n"
