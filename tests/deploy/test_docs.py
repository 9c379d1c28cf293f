"""deploy/README.md stays in step with the code it describes, and the main README points to it."""

from __future__ import annotations

from tests.deploy.support import ROOT

DOC = (ROOT / "deploy" / "README.md").read_text()


def test_every_topic_and_its_key_is_in_the_table() -> None:
    from shared.topics import ALL_TOPICS, KEY_FORMATS

    for topic in ALL_TOPICS:
        row = next(line for line in DOC.splitlines() if line.startswith(f"| `{topic}` |"))
        key = "routing domain `tenant/site`" if "{data.site}" in KEY_FORMATS[topic] else "customer"
        assert key in row, row


def test_the_settings_and_commands_it_names_exist() -> None:
    import re

    from tests.deploy.support import known_env_names

    known = known_env_names()
    names = set(re.findall(r"SWITCHBOARD_[A-Z_]*[A-Z](?![A-Z_*])", DOC))
    assert len(names) > 10
    for name in names:
        assert name in known, name
    assert "switchboard migrate" in DOC and "switchboard topics create" in DOC


def test_the_main_readme_links_it_and_keeps_the_newcomer_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "(deploy/README.md)" in readme
    install = "pip install -r requirements-dev.lock && pip install --no-deps -e . && switchboard run"
    assert install in readme and "python -m pytest" in readme
