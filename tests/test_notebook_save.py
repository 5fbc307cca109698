"""Opening a notebook in JupyterLab and saving it without running anything leaves `git status` clean.

What the lab does, simulated with Jupyter's own pieces: the server reads the file (FileContentsManager.get);
the page starts the notebook's kernel and writes the kernel's spec and language_info into the notebook's
metadata (JupyterLab's NotebookPanel._updateSpec/_updateLanguage; a deep-equal value is no change); saving
sends the notebook back and the server writes it (FileContentsManager.save -> nbformat.write). The course
kernel is started for real, so its kernel_info reply is what a learner's lab receives. tests/test_jupyterlab.py
does the same in a real JupyterLab in Chromium for chapter 00.
"""
import shutil

import pytest
from jupyter_client.manager import KernelManager
from jupyter_server.services.contents.filemanager import FileContentsManager
from nbformat.sign import NotebookNotary

from labkit.course.execute import KERNEL_METADATA
from labkit.course.kernel import KERNEL_NAME, find_kernel
from labkit.course.site import chapter_notebooks


@pytest.fixture(scope="module")
def lab_metadata():
    """kernelspec and language_info as JupyterLab writes them once the notebook's kernel is up."""
    found = find_kernel()
    assert found is not None, "the course kernel is not installed: make setup"
    km = KernelManager(kernel_name=KERNEL_NAME)
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=120)
        info = kc.kernel_info(reply=True, timeout=60)["content"]["language_info"]
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    spec = found[1]
    return {"kernelspec": {"name": KERNEL_NAME, "display_name": spec["display_name"], "language": spec["language"]},
            "language_info": info}


def _open_and_save(path, tmp_path, metadata) -> bytes:
    shutil.copy(path, tmp_path / path.name)
    cm = FileContentsManager(root_dir=str(tmp_path))
    cm.notary = NotebookNotary(db_file=":memory:")  # trust signatures stay out of the user's Jupyter data
    model = cm.get(path.name, content=True, type="notebook")
    nb = model["content"]
    nb.metadata.update(metadata)  # the page, once the kernel is up
    cm.save({"type": "notebook", "format": "json", "content": nb}, path.name)
    return (tmp_path / path.name).read_bytes()


@pytest.mark.parametrize("path", chapter_notebooks(), ids=lambda p: p.stem)
def test_opening_and_saving_a_notebook_changes_no_byte(path, tmp_path, lab_metadata):
    assert path.read_bytes() == _open_and_save(path, tmp_path, lab_metadata), (
        f"{path.name} changes when opened and saved in JupyterLab: re-run it with `make execute NB={path}` "
        f"(stores the course kernel's metadata), or: python -m labkit.course.install_kernel --notebooks {path}")


def test_the_simulation_catches_the_old_metadata(tmp_path, lab_metadata):
    """With the python3 kernelspec of before, the same open-and-save rewrites the file (the issue's bug)."""
    import json

    path = chapter_notebooks()[0]
    nb = json.loads(path.read_text(encoding="utf-8"))
    nb["metadata"]["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    nb["metadata"]["language_info"] = {"file_extension": ".py", "mimetype": "text/x-python", "name": "python"}
    old = tmp_path / "old" / path.name
    old.parent.mkdir()
    old.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    python3_lab = {**lab_metadata, "kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                                  "language": "python"}}
    python3_lab["language_info"] = {**lab_metadata["language_info"], "version": "3.11.7"}  # plain ipykernel
    assert old.read_bytes() != _open_and_save(old, tmp_path, python3_lab)
    assert lab_metadata == {k: KERNEL_METADATA[k] for k in ("kernelspec", "language_info")}
