import pytest

from spatialavatar_app.app.drops import classify_drop


@pytest.fixture
def files(tmp_path):
    names = ["a.jpg", "b.PNG", "c.webp", "d.jpeg", "e.png", "talk.mp4", "me.savatar", "g.ply", "notes.txt"]
    for n in names:
        (tmp_path / n).write_bytes(b"x")
    return {n: tmp_path / n for n in names}


@pytest.mark.parametrize("names,kind", [
    (["a.jpg"], "build"), (["a.jpg", "b.PNG", "c.webp", "d.jpeg"], "build"),
    (["talk.mp4"], "video"), (["me.savatar"], "avatar"), (["g.ply"], "ply")])
def test_what_a_drop_does(files, names, kind):
    action = classify_drop([files[n] for n in names])
    assert action.kind == kind
    assert action.paths == tuple(files[n] for n in names)


@pytest.mark.parametrize("names,message", [
    (["a.jpg", "b.PNG", "c.webp", "d.jpeg", "e.png"], "5 portraits dropped; an avatar is built from 1 to 4"),
    (["notes.txt"], "cannot open notes.txt"),
    (["a.jpg", "talk.mp4"], "at a time"),
    (["talk.mp4", "me.savatar"], "at a time"),
    ([], "nothing was dropped")])
def test_refused_drops_say_why(files, names, message):
    action = classify_drop([files[n] for n in names])
    assert action.kind == "reject"
    assert message in action.message


def test_a_folder_or_missing_file_is_refused(tmp_path):
    assert "is a folder" in classify_drop([tmp_path]).message
    assert "not a file" in classify_drop([tmp_path / "gone.jpg"]).message
