"""What a checkpoint predicts: the known repos (official defaults included), and for anything else
the user is asked, never a guess from the task."""

import shutil

import pytest

from lotus_blender import protocol
from lotus_blender.worker import checkpoint
from tests.blender_side import Reports, drive, gradient, new_image, remove_images

NEW_REPOS = {"jingheya/lotus-depth-g-v2-0-disparity": "disparity",
             "jingheya/lotus-normal-g-v1-0": "normal",
             "jingheya/lotus-normal-d-v1-0": "normal"}


def _without_metadata(source, dest):
    """A copy of a tiny checkpoint without its lotus.json: nothing in it says what it predicts."""
    shutil.copytree(source, dest)
    (dest / checkpoint.METADATA_FILE).unlink()
    return dest


def test_official_defaults_are_known():
    for repo, kind in NEW_REPOS.items():
        assert protocol.KNOWN_CHECKPOINTS[repo] == kind


@pytest.mark.parametrize("repo", sorted(NEW_REPOS))
def test_new_repos_are_recognised_from_their_folders(tiny_checkpoints, tmp_path, repo):
    variant = "D" if "-d-" in repo else "G"
    source = tiny_checkpoints[(variant, "normal" if NEW_REPOS[repo] == "normal" else "disparity")]
    task = "normal" if NEW_REPOS[repo] == "normal" else "depth"
    # A folder named after the repo, and a Hugging Face cache snapshot of it.
    named = _without_metadata(source, tmp_path / repo.split("/")[1])
    snapshot = _without_metadata(
        source, tmp_path / "hub" / ("models--" + repo.replace("/", "--")) / "snapshots" / "abc")
    for folder in (named, snapshot):
        info = checkpoint.inspect_checkpoint(folder, task)
        assert (info.repo_id, info.kind, info.variant) == (repo, NEW_REPOS[repo], variant)


def test_unknown_normal_model_is_not_guessed(tiny_checkpoints, tmp_path):
    folder = _without_metadata(tiny_checkpoints[("G", "normal")], tmp_path / "my-finetune")
    with pytest.raises(checkpoint.UnknownKindError, match=r"cannot tell what .*my-finetune predicts"
                                                          r".*give its kind \(normal\)") as caught:
        checkpoint.inspect_checkpoint(folder, "normal")
    assert caught.value.source == str(folder)
    with pytest.raises(checkpoint.UnknownKindError, match=r"give its kind \(disparity or depth\)"):
        checkpoint.inspect_checkpoint(folder, "depth")
    assert checkpoint.inspect_checkpoint(folder, "normal", kind_override="normal").kind == "normal"


def test_preferences_offer_the_new_repos_and_keep_saved_choices(lotus):
    import bpy
    prefs = bpy.context.preferences.addons[lotus.name].preferences
    items = {task: {item.identifier: item.value for item in
                    prefs.bl_rna.properties[f"{task}_model"].enum_items}
             for task in ("depth", "normal")}
    assert "jingheya/lotus-depth-g-v2-0-disparity" in items["depth"]
    assert {"jingheya/lotus-normal-g-v1-0", "jingheya/lotus-normal-d-v1-0"} <= set(items["normal"])
    assert not set(items["depth"]) & {"jingheya/lotus-normal-g-v1-0", "jingheya/lotus-normal-d-v1-0"}
    # Choices saved before these were added keep their numbers (Blender saves enums as numbers).
    assert items["depth"]["jingheya/lotus-depth-g-v2-1-disparity"] == 0
    assert items["depth"]["jingheya/lotus-depth-d-v1-1"] == 4 and items["depth"]["LOCAL"] == 5
    assert items["normal"]["jingheya/lotus-normal-d-v1-1"] == 1 and items["normal"]["LOCAL"] == 2
    kinds = prefs.bl_rna.properties["depth_model_kind"].enum_items
    assert (kinds["DISPARITY"].value, kinds["DEPTH"].value) == (0, 1)
    assert prefs.bl_rna.properties["depth_model_kind"].default == 'AUTO'
    assert prefs.bl_rna.properties["normal_model_kind"].default == 'AUTO'


def test_other_repo_asks_for_its_kind(lotus):
    import bpy
    prefs = bpy.context.preferences.addons[lotus.name].preferences
    prefs.depth_model = 'REPO'
    prefs.depth_model_repo = "someone/lotus-depth-finetune"
    prefs.depth_model_kind = 'AUTO'
    expected = ("Lotus cannot tell what someone/lotus-depth-finetune predicts: set Depth Model "
                "Output (Disparity or Depth) in the Lotus add-on preferences")
    with pytest.raises(lotus.models.ModelError) as caught:
        lotus.models.model_request("depth")
    assert str(caught.value) == expected
    image = new_image("kind_src", gradient())
    try:
        with pytest.raises(RuntimeError, match="set Depth Model Output"):
            bpy.ops.lotus.predict_image(image=image.name, task='DEPTH')
        prefs.depth_model_repo = "not a repo id"
        with pytest.raises(lotus.models.ModelError, match=r"repo id \(owner/name\)"):
            lotus.models.model_request("depth")
        # Once the kind is given, the repo goes the way of the known ones (here: offline).
        prefs.depth_model_repo = "someone/lotus-depth-finetune"
        prefs.depth_model_kind = 'DEPTH'
        with pytest.raises(lotus.models.ModelError, match="online access is off"):
            lotus.models.model_request("depth")
        # A known repo needs no kind.
        prefs.depth_model_repo = "jingheya/lotus-depth-g-v2-0-disparity"
        prefs.depth_model_kind = 'AUTO'
        with pytest.raises(lotus.models.ModelError, match="online access is off"):
            lotus.models.model_request("depth")
    finally:
        prefs.depth_model_repo = ""
        remove_images("kind_src")


def test_local_normal_model_without_kind_asks_then_runs(lotus, tiny_checkpoints, tmp_path):
    import bpy
    folder = _without_metadata(tiny_checkpoints[("G", "normal")], tmp_path / "my-normals")
    prefs = bpy.context.preferences.addons[lotus.name].preferences
    prefs.normal_model_path = str(folder)
    prefs.normal_model_kind = 'AUTO'
    image = new_image("local_kind_src", gradient())

    def run():
        reports = Reports()

        def gather(context, job_dir, resolution):
            return [lotus.inputs.prepare_image(image, job_dir, resolution, 0)], []
        built = lotus.operators.build_jobs(bpy.context, 'NORMAL', gather, reports)
        lotus.job_queue.manager.submit(built[0])
        return drive(lotus.job_runner.JobRunner(built, reports)), built[0]

    try:
        assert "kind" not in lotus.models.model_request("normal")
        status, job = run()
        assert status == {'CANCELLED'}
        assert job.message == (f"Lotus cannot tell what {folder} predicts: set Normal Model "
                               f"Output (Normal) in the Lotus add-on preferences")
        assert lotus.job_queue.manager.last_error.endswith(job.message)
        prefs.normal_model_kind = 'NORMAL'
        assert lotus.models.model_request("normal")["kind"] == "normal"
        status, job = run()
        assert status == {'FINISHED'} and job.outputs[0]["kind"] == "normal"
    finally:
        prefs.normal_model_kind = 'AUTO'
        remove_images("local_kind_src")
