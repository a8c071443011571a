"""docs/user-guide.md: every command block names the test that exercises it, and that test exists."""

from support.user_guide import REPO, bash_fences, blocks


def test_every_command_block_is_tagged_with_an_existing_test():
    found = blocks()
    assert len(found) == bash_fences() and found, "a ```bash block of docs/user-guide.md has no <!-- block: ... -->"
    for b in found.values():
        path, _, func = b.test.partition("::")
        source = (REPO / path).read_text()
        assert f"def {func}(" in source, f"block {b.name}: {b.test} does not exist"
        if path == "tests/cluster/test_user_guide.py":  # run as written there
            assert f'"{b.name}"' in source, f"block {b.name}: {path} does not run it"


def test_the_guide_uses_only_commands_that_exist():
    from finetune_cli.main import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices
    for b in blocks().values():
        for cmd in b.commands:
            if cmd.startswith("finetune "):
                assert cmd.split()[1] in sub, cmd
