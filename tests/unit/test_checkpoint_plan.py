"""shim/runc/task/checkpoint.py: the image and work directories a checkpoint or restore uses, and the image mirror."""
import errno
import os

import pytest

from shim.errors import InvalidArgument
from shim.runc.task import checkpoint as ckpt
from shim.runc.task.checkpoint import CheckpointRequest, plan_checkpoint, restore_criu


@pytest.mark.parametrize("req,images,mirror", [
    (CheckpointRequest(path="/tmp/ctrd-checkpoint1"), "/tmp/ctrd-checkpoint1", None),
    (CheckpointRequest(path="/img", image_path="/img/"), "/img", None),            # the same directory
    (CheckpointRequest(path="/tmp/ctrd-checkpoint1", image_path="/mine"), "/tmp/ctrd-checkpoint1", "/mine"),
    (CheckpointRequest(image_path="/mine"), "/mine", None),
])
def test_image_directory_and_mirror(req, images, mirror):
    plan = plan_checkpoint(req, "/b")
    assert (plan.spec.criu.image_path, plan.mirror_to) == (images, mirror)
    assert (plan.spec.criu.work_path, plan.remove_work) == ("/b/work/criu-work", "/b/work/criu-work")
    assert plan.spec.leave_running


def test_chosen_work_path_is_kept():
    plan = plan_checkpoint(CheckpointRequest(path="/i", work_path="/w", exit=True), "/b")
    assert (plan.spec.criu.work_path, plan.remove_work, plan.spec.leave_running) == ("/w", None, False)


def test_restore_work_dir_defaults_to_the_bundle_work_dir():
    assert restore_criu("/ck", "", "/b").work_path == "/b/work"
    assert restore_criu("/ck", "/parent", "/b", "/w") == ckpt.rt.CriuOptions("/ck", "/w", "/parent")
    with pytest.raises(InvalidArgument, match="criu_work_path"):
        restore_criu("/ck", "", "/b", "w")


async def test_mirror_links_and_copies_across_file_systems(tmp_path, monkeypatch):
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "sub").mkdir(parents=True)
    (src / "pages-1.img").write_bytes(b"p" * 10)
    (src / "sub" / "x.img").write_bytes(b"x")
    dst.mkdir()
    (dst / "pages-1.img").write_bytes(b"stale")
    await ckpt.mirror_images(str(src), str(dst))
    assert (dst / "pages-1.img").read_bytes() == b"p" * 10
    assert os.path.samefile(src / "pages-1.img", dst / "pages-1.img")  # a hard link on one file system

    def cross_device(a, b):
        raise OSError(errno.EXDEV, "Invalid cross-device link")
    monkeypatch.setattr(os, "link", cross_device)
    other = tmp_path / "other"
    await ckpt.mirror_images(str(src), str(other))
    assert (other / "sub" / "x.img").read_bytes() == b"x"
    assert not os.path.samefile(src / "pages-1.img", other / "pages-1.img")
