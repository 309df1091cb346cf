"""servectl reads config.properties as Java does and writes it so that Java, and TorchServe's
own Python launcher (which reads ``vmargs`` itself), see the same values again."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ts.model_server import load_properties as torchserve_launcher_reads

from servectl.config.settings import CONFIG_PROPERTIES, ServeSettings, read_properties, write_properties

JAVA_SYNTAX = r"""# a comment
! another comment
plain=1
spaced   =   2
colon:3
blank 4
continued=one \
          two\
  three
escaped\ key\:x\=y=a\:b\=c\\d\u00e9\te
""" + "trailing=kept  \nempty\n"


def test_java_syntax_is_read_as_java_reads_it(tmp_path):
    path = tmp_path / "x.properties"
    path.write_text(JAVA_SYNTAX)
    assert read_properties(path) == {
        "plain": "1",
        "spaced": "2",
        "colon": "3",
        "blank": "4",
        "continued": "one twothree",  # leading blanks of a continuation line are dropped
        "escaped key:x=y": "a:b=c\\dé\te",
        "trailing": "kept  ",  # Java keeps trailing blanks
        "empty": "",
    }


def test_the_shipped_allowed_urls_is_the_regex_java_sees():
    """The file says ``.*\\\\.mar``; Java unescapes it to the regex ``.*\\.mar`` (a literal dot)."""
    allowed = read_properties(CONFIG_PROPERTIES)["allowed_urls"]
    assert allowed == r"file://.*/model_store/[^/]+\.mar"
    assert re.fullmatch(allowed, "file:///srv/model_store/m.mar")
    assert not re.fullmatch(allowed, "file:///srv/model_store/m_mar")
    assert not re.fullmatch(allowed, "file:///srv/model_store/sub/m.mar")


def test_the_rendered_config_keeps_allowed_urls_and_vmargs_meaning(tmp_path):
    settings = ServeSettings.load("m", run_dir=tmp_path)
    rendered = settings.render()
    # rendered as this instance's own store: the file escapes the regex's backslashes for Java
    again = read_properties(rendered)
    assert again["allowed_urls"] == f"file://{re.escape(str(settings.model_store))}/[^/]+\\.mar"
    assert re.fullmatch(again["allowed_urls"], f"file://{settings.model_store}/m.mar")
    assert not re.fullmatch(again["allowed_urls"], "file:///elsewhere/model_store/m.mar")
    # TorchServe's launcher splits at '=' without unescaping and passes vmargs to the JVM
    assert torchserve_launcher_reads(str(rendered))["vmargs"] == settings.properties["vmargs"]


# keys Java can hold (not empty); values anything, including separators, escapes, non-ASCII
KEYS = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)
VALUES = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)


@given(st.dictionaries(KEYS, VALUES, max_size=6))
def test_any_properties_round_trip(tmp_path_factory, props):
    path = tmp_path_factory.mktemp("rt") / "x.properties"
    write_properties(path, props)
    path.read_text(encoding="ascii")  # ASCII: TorchServe's launcher decodes it in any locale
    assert read_properties(path) == props


def test_values_with_separators_reach_torchserve_launcher_verbatim(tmp_path):
    props = {"vmargs": "-Xmx1g -Dx=2 -Dy=a:b", "plugins_path": "/opt/plugins"}
    path = tmp_path / "x.properties"
    write_properties(path, props)
    assert torchserve_launcher_reads(str(path)) == props


@pytest.mark.skipif(shutil.which("java") is None, reason="cross-check against a real JVM where one is on PATH")
def test_a_real_jvm_reads_what_servectl_reads(tmp_path):
    source = tmp_path / "Props.java"
    source.write_text(
        "import java.io.*; import java.util.*;\n"
        "public class Props { public static void main(String[] a) throws Exception {\n"
        "  Properties p = new Properties(); try (InputStream in = new FileInputStream(a[0])) { p.load(in); }\n"
        "  for (String k : p.stringPropertyNames()) { StringBuilder s = new StringBuilder();\n"
        "    for (char c : (k + '\\u0000' + p.getProperty(k)).toCharArray()) s.append(String.format(\"%04x \", (int) c));\n"
        "    System.out.println(s); } } }\n"
    )
    written = tmp_path / "written.properties"
    write_properties(written, {"a b:c": "x=y:z\\w é€", "lead": "  two", "nl": "a\nb", "#k": "v"})
    given_file = tmp_path / "given.properties"
    given_file.write_text(JAVA_SYNTAX)
    for path in (written, given_file, CONFIG_PROPERTIES):
        assert java_reads(source, path) == read_properties(path), path


def java_reads(source: Path, path: Path) -> dict[str, str]:
    out = subprocess.run(["java", str(source), str(path)], capture_output=True, text=True, timeout=120, check=True)
    pairs = (bytes.fromhex(line.replace(" ", "")).decode("utf-16-be").split("\0", 1) for line in out.stdout.splitlines())
    return dict(pairs)
