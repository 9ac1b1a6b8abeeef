"""A project's classes under other names than the checkpoint's: "apoferritin",
"cytosolic-ribosome", a class with the checkpoint's PDB ID, or one the user maps by hand
(sparse_det/class_match.py). Until 2026-12-06 a class was the checkpoint's only under the
very same name: infer dropped the picks of every other, and finetune learnt it from
nothing."""

from __future__ import annotations

import copy
import re
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from data_tools.particles import DataError, ParticleTable, ParticleType, emdb_key
from sparse_det.checkpoint import DEFAULT_CHECKPOINT, checkpoint_settings, read_checkpoint
from sparse_det.class_match import (
    SET_ASIDE,
    match_classes,
    named_as_listed,
    parse_class_map,
    rename_classes,
)
from tests.test_particle_classes import relabelled

KNOWN = ParticleTable.competition()
# The project's name for each of the checkpoint's classes in the tests below, and the rule
# that must find it: written another way, another name for it, its PDB ID.
OTHER = {"apo-ferritin": "Apo_Ferritin", "ribosome": "cytosolic-ribosome",
         "beta-galactosidase": "my-bgal", "virus-like-particle": "VLP"}


def table(*rows: tuple[str, str]) -> ParticleTable:
    """A project's classes, (name, PDB ID) each, labelled in order."""
    return ParticleTable([ParticleType(n, 100.0, 1.0, i + 1, pdb)
                          for i, (n, pdb) in enumerate(rows)])


def test_classes_match_by_name_another_name_and_pdb_id():
    listed = table(("Apo_Ferritin", ""), ("cytosolic-ribosome", ""), ("my-bgal", "6x1q "),
                   ("thyroglobulin", ""), ("VLP", ""), ("proteasome", "1RYP"))
    m = match_classes(KNOWN, listed)
    assert m.pairs == {"Apo_Ferritin": "apo-ferritin", "cytosolic-ribosome": "ribosome",
                       "my-bgal": "beta-galactosidase", "thyroglobulin": "thyroglobulin",
                       "VLP": "virus-like-particle"}
    assert m.how == {"Apo_Ferritin": "the same name written another way",
                     "cytosolic-ribosome": "a known other name for it",
                     "my-bgal": "the same PDB ID", "thyroglobulin": "the same name",
                     "VLP": "a known other name for it"}
    assert m.unlisted(KNOWN.names) == ["beta-amylase"]
    assert m.unpicked(listed.names) == ["proteasome"]
    assert m.unsure == []
    assert "the project's 'my-bgal' is the checkpoint's 'beta-galactosidase' (the same " \
           "PDB ID)" in m.renamed()


def test_a_data_portal_config_is_read_as_the_checkpoints_classes():
    """As copick's data-portal layer writes a config: object names lower case with hyphens,
    PDB IDs as "PDB-XXXX", every radius 50 Å. Each class is matched, and the radii far off
    the checkpoint's are pointed out (F4 and fine-tuning go by the config's)."""
    listed = ParticleTable([ParticleType(n, 50.0, 1.0, i + 1, pdb) for i, (n, pdb) in
                            enumerate([("ferritin-complex", "PDB-4V1W"),
                                       ("beta-galactosidase", "PDB-6X1Q"),
                                       ("cytosolic-ribosome", ""), ("thyroglobulin", ""),
                                       ("virus-like-capsid", "PDB-6N4V"),
                                       ("mystery", "PDB-6SCJ")])])
    m = match_classes(KNOWN, listed)
    assert m.pairs == {"ferritin-complex": "apo-ferritin",
                       "beta-galactosidase": "beta-galactosidase",
                       "cytosolic-ribosome": "ribosome", "thyroglobulin": "thyroglobulin",
                       "virus-like-capsid": "virus-like-particle"}
    # "mystery" has thyroglobulin's PDB ID, but the config's "thyroglobulin" took it first.
    assert m.unpicked(listed.names) == ["mystery"]
    notes = m.radius_notes(KNOWN, listed)
    # 50 against apo-ferritin's 60 Å passes; against 90, 150, 130 and 135 Å it does not.
    assert {re.search(r"project's '(.*?)'", n).group(1) for n in notes} == {
        "beta-galactosidase", "cytosolic-ribosome", "thyroglobulin", "virus-like-capsid"}
    assert any("a radius of 50 Å, the checkpoint's 'ribosome' 150 Å" in n for n in notes)


def test_an_exact_name_goes_before_another_rule():
    """"ribosome" and "80S" both name the checkpoint's ribosome: the exact name takes it,
    and "80S" is left unmatched rather than shared."""
    m = match_classes(KNOWN, table(("80S", ""), ("ribosome", "")))
    assert m.pairs == {"ribosome": "ribosome"}
    assert m.unpicked(["80S", "ribosome"]) == ["80S"]


def test_a_rule_with_two_answers_pairs_neither():
    m = match_classes(KNOWN, table(("bgal-a", "6X1Q"), ("bgal-b", "6X1Q")))
    assert m.pairs == {}
    assert len(m.unsure) == 1 and "['bgal-a', 'bgal-b']" in m.unsure[0], m.unsure


def test_classes_match_by_their_ontology_identifier():
    """The data portal identifies its objects by Gene Ontology ID or UniProtKB accession
    (copick's `identifier`, once `go_id`), whatever a dataset's authors call them. The
    shipped checkpoints' tables name none: their classes are the portal's for the
    competition's complexes. Two classes of one identifier pair neither."""
    listed = ParticleTable([
        ParticleType("ribosome-80s-cytoplasm", 150.0, 1.0, 1, identifier="go:0022626"),
        ParticleType("lactase-tetramer", 90.0, 2.0, 2, identifier="UniProtKB:P00722"),
        ParticleType("TGdimer", 130.0, 2.0, 3, identifier="p01267 "),
        ParticleType("capsid-a", 135.0, 1.0, 4, identifier="GO:0170047"),
        ParticleType("capsid-b", 135.0, 1.0, 5, identifier="GO_0170047"),
        ParticleType("actin", 30.0, 1.0, 6, identifier="GO:0005884")])
    assert KNOWN["ribosome"].identifier == "GO:0022626"
    old_style = ParticleTable([replace(p, identifier="") for p in KNOWN])
    for known in (KNOWN, old_style):
        m = match_classes(known, listed)
        assert m.pairs == {"ribosome-80s-cytoplasm": "ribosome",
                           "lactase-tetramer": "beta-galactosidase",
                           "TGdimer": "thyroglobulin"}, m.pairs
        assert set(m.how.values()) == {"the same identifier"}
        assert len(m.unsure) == 1 and "['capsid-a', 'capsid-b']" in m.unsure[0], m.unsure
        assert m.unpicked(listed.names) == ["capsid-a", "capsid-b", "actin"]


def test_classes_match_by_their_emdb_id(tmp_path):
    """copick's `emdb_id` pairs a class of a checkpoint fine-tuned on one project with the
    class of another project that names it otherwise, however the ID is written; the name
    rules go first, an ID two classes share pairs neither, and the ID survives a copick
    config written and read back."""
    import json

    from data_tools.copick_io import copick_config

    known = ParticleTable([
        ParticleType("my-complex", 80.0, 1.0, 1, emdb_id="EMD-11638"),
        ParticleType("ribosome", 150.0, 1.0, 2, emdb_id="EMD-3883"),
        ParticleType("barrel", 70.0, 1.0, 3, emdb_id="EMD-1000")])
    listed = ParticleTable([
        ParticleType("target-a", 80.0, 1.0, 1, emdb_id="emd_11638"),
        ParticleType("80S", 150.0, 1.0, 2, emdb_id="EMD-9999"),  # a known other name
        ParticleType("barrel-x", 70.0, 1.0, 3, emdb_id="EMDB:1000"),
        ParticleType("barrel-y", 70.0, 1.0, 4, emdb_id="1000"),
        ParticleType("nothing-alike", 70.0, 1.0, 5)])
    m = match_classes(known, listed)
    assert m.pairs == {"target-a": "my-complex", "80S": "ribosome"}, m.pairs
    assert m.how == {"target-a": "the same EMDB ID", "80S": "a known other name for it"}
    assert len(m.unsure) == 1 and "['barrel-x', 'barrel-y']" in m.unsure[0], m.unsure
    path = tmp_path / "copick_config.json"
    path.write_text(json.dumps(copick_config("x", listed, tmp_path, tmp_path)))
    back = ParticleTable.from_copick_config(path)
    assert [p.emdb_id for p in back] == ["emd_11638", "EMD-9999", "EMDB:1000", "1000", ""]
    assert "emdb_id" not in json.loads(path.read_text())["pickable_objects"][-1]
    assert [emdb_key(i) for i in (" EMDB-0042 ", "emd-abc", "")] == ["EMD-0042", "EMD-ABC", ""]


def test_a_copick_config_with_identifiers_and_no_radii(tmp_path):
    """copick reads `go_id` as `identifier` and leaves `radius` optional: a complex the
    competition knows (by name, PDB ID or identifier) gets its radius and weight, another
    without a radius is refused, naming the file and the object."""
    import json

    from data_tools.copick_io import copick_config

    objects = [{"name": "cytosolic-ribosome", "go_id": "GO:0022626"},
               {"name": "Tg", "identifier": "UniProtKB:P01267", "radius": 120},
               {"name": "unknown-barrel", "pdb_id": "PDB-1RYP"}]
    path = tmp_path / "copick_config.json"
    path.write_text(json.dumps({"pickable_objects": [
        {**o, "is_particle": True, "label": i + 1} for i, o in enumerate(objects)]}))
    table = ParticleTable.from_copick_config(path)
    assert [(p.name, p.radius_A, p.weight, p.identifier) for p in table] == [
        ("cytosolic-ribosome", 150.0, 1.0, "GO:0022626"),
        ("Tg", 120.0, 2.0, "UniProtKB:P01267"),
        ("unknown-barrel", 80.0, 1.0, "")]  # the simulator's proteasome, by its PDB ID
    written = copick_config("x", table, tmp_path, tmp_path)["pickable_objects"]
    assert [o.get("identifier") for o in written] == ["GO:0022626", "UniProtKB:P01267", None]
    path.write_text(json.dumps({"pickable_objects": [
        {"name": "mystery", "is_particle": True, "label": 1, "identifier": "GO:0005884"}]}))
    with pytest.raises(DataError, match=r"copick_config.json: bad pickable object .*no "
                                        r"radius for 'mystery'"):
        ParticleTable.from_copick_config(path)


def test_the_users_map_goes_first_and_may_say_none():
    listed = table(("ribosome", ""), ("big-thing", ""), ("ferritin", ""))
    m = match_classes(KNOWN, listed, {"big-thing": "ribosome", "ferritin": ""})
    # "ribosome" is left without a class: the user gave the checkpoint's to "big-thing".
    assert m.pairs == {"big-thing": "ribosome"}
    assert m.how["big-thing"] == "your class map"
    assert m.renaming(KNOWN.names) == {"ribosome": "big-thing"}
    # The checkpoint's own "ribosome" would share its name with the renamed apo-ferritin:
    # set aside.
    m = match_classes(KNOWN, table(("ribosome", ""), ("apo", "")), {"ribosome": "apo-ferritin"})
    assert m.renaming(KNOWN.names) == {"apo-ferritin": "ribosome",
                                       "ribosome": "ribosome" + SET_ASIDE}


@pytest.mark.parametrize("class_map, message", [
    ({"nothing": "ribosome"}, "the project lists no class 'nothing'"),
    ({"ribosome": "80S"}, "the checkpoint has no class '80S'"),
])
def test_a_map_naming_an_unknown_class_is_refused(class_map, message):
    with pytest.raises(DataError, match=message):
        match_classes(KNOWN, table(("ribosome", "")), class_map)


def test_class_map_words_are_parsed_or_refused():
    assert parse_class_map(["80S=ribosome", " cap = virus-like-particle", "x="]) == \
        {"80S": "ribosome", "cap": "virus-like-particle", "x": ""}
    for bad, message in ((["ribosome"], "write NAME=CLASS"), (["=ribosome"], "NAME=CLASS"),
                         (["a=b", "a=c"], "names 'a' twice")):
        with pytest.raises(DataError, match=message):
            parse_class_map(bad)


def test_a_renamed_checkpoint_names_every_class_record_anew():
    doc = read_checkpoint(DEFAULT_CHECKPOINT)
    renaming = {"apo-ferritin": "Apo_Ferritin", "ribosome": "80S"}
    out = rename_classes(doc, renaming)
    assert out["model"] is doc["model"]
    names = [p["name"] for p in out["particles"]]
    assert names == [renaming.get(p["name"], p["name"]) for p in doc["particles"]]
    for key in ("thresholds", "calibration"):
        assert set(out[key]) == {renaming.get(k, k) for k in doc[key]}
        assert out[key]["80S"] == doc[key]["ribosome"]
    tuned = out["extra"]["network_tuned"]
    assert "80S" in tuned["thresholds"] and "ribosome" not in tuned["thresholds"]
    rescorer = out["extra"]["rescorer"]
    assert "ribosome" not in rescorer["network_classes"]
    assert set(rescorer["calibration"]) >= {"Apo_Ferritin", "80S"}
    assert doc["particles"][0]["name"] == "apo-ferritin"  # the original is untouched
    # Of the config, only the class weights are keyed by class; its settings are not read
    # as class names (a word such as "tomogram" may be both).
    doc["config"]["loss"]["class_weights"] = {"ribosome": 2.0}
    doc["config"]["postprocess"]["confidence_by"] = "tomogram"
    out = rename_classes(doc, {"ribosome": "80S", "tomogram": "T"})
    assert out["config"]["loss"]["class_weights"] == {"80S": 2.0}
    assert out["config"]["postprocess"] is doc["config"]["postprocess"]
    assert doc["config"]["loss"]["class_weights"] == {"ribosome": 2.0}


@pytest.fixture(scope="module")
def full_picks(small_project):
    from sparse_det.stream import infer_project

    return infer_project(small_project, DEFAULT_CHECKPOINT, device="cpu")


def _same_picks(picked: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert len(picked) == len(expected) > 0
    np.testing.assert_array_equal(picked["particle_type"], expected["particle_type"])
    np.testing.assert_allclose(picked[["x", "y", "z", "score"]].to_numpy(),
                               expected[["x", "y", "z", "score"]].to_numpy(), rtol=0, atol=1e-4)


def test_infer_names_picks_as_the_project_does(small_project, full_picks, tmp_path, caplog):
    """The shipped default on a project calling four classes otherwise (one found only by
    its PDB ID): the picks of the full project, each under the project's name."""
    from sparse_det.stream import infer_project

    project = relabelled(small_project, tmp_path / "named", rename=OTHER, keep_pdb=True)
    with caplog.at_level("INFO"):
        picked = infer_project(project, DEFAULT_CHECKPOINT, device="cpu")
    assert "the project's 'cytosolic-ribosome' is the checkpoint's 'ribosome'" in caplog.text
    assert "lists no" not in caplog.text and "has no class" not in caplog.text, caplog.text
    assert "a radius of" not in caplog.text
    expected = full_picks.assign(particle_type=full_picks["particle_type"].replace(OTHER))
    assert set(OTHER.values()) <= set(picked["particle_type"])
    _same_picks(picked, expected)


def test_infer_class_map_on_the_command_line(small_project, full_picks, tmp_path):
    """A complex no rule can place ("capsid-x", no PDB ID) is the checkpoint's VLP where
    --class-map says so, and a bad map is refused before any work."""
    from sparse_det.infer import main

    project = relabelled(small_project, tmp_path / "mapped",
                         rename={"virus-like-particle": "capsid-x"})
    out = tmp_path / "picks.csv"
    base = ["--project", str(project.path), "--out", str(out), "--device", "cpu", "--quiet"]
    assert main([*base, "--class-map", "capsid-x=virus-like-particle"]) == 0
    picked = pd.read_csv(out)
    vlp = full_picks[full_picks["particle_type"] == "virus-like-particle"]
    mine = picked[picked["particle_type"] == "capsid-x"]
    assert len(mine) == len(vlp) > 0
    np.testing.assert_allclose(mine[["x", "y", "z"]].to_numpy(),
                               vlp[["x", "y", "z"]].to_numpy(), atol=1e-3)
    assert main([*base, "--class-map", "capsid-x=capsid"]) == 2


def test_a_checkpoint_named_as_the_project_picks_the_same(small_project, full_picks,
                                                            tmp_path):
    """finetune, tune and adapt start from a copy of the base whose classes bear the
    project's names: its thresholds, calibration and rescorer follow the names, so it picks
    exactly what the base picks, called as the project calls it."""
    from sparse_det.stream import infer_project

    project = relabelled(small_project, tmp_path / "named", rename=OTHER, keep_pdb=True)
    said = []
    named = named_as_listed(DEFAULT_CHECKPOINT, project.particles, None, tmp_path / "work",
                            said.append)
    assert named.parent == tmp_path / "work" and named != DEFAULT_CHECKPOINT
    settings = checkpoint_settings(named)
    assert set(OTHER.values()) <= set(settings.particles.names)
    assert settings.thresholds["VLP"] == \
        checkpoint_settings(DEFAULT_CHECKPOINT).thresholds["virus-like-particle"]
    assert any("'my-bgal' is the checkpoint's 'beta-galactosidase'" in s for s in said)
    picked = infer_project(project, named, device="cpu")
    _same_picks(picked, full_picks.assign(
        particle_type=full_picks["particle_type"].replace(OTHER)))
    # Nothing to rename: the checkpoint itself.
    assert named_as_listed(DEFAULT_CHECKPOINT, small_project.particles, None,
                           tmp_path / "work", said.append) == DEFAULT_CHECKPOINT


def test_training_from_a_checkpoint_reads_other_names_as_its_classes():
    """build_state on a table calling the classes otherwise: each row predicts what the
    checkpoint's row for that class predicted, and the threshold prior is keyed by the
    project's names."""
    from sparse_det.model import build_model
    from sparse_det.train_state import build_state

    settings = checkpoint_settings(DEFAULT_CHECKPOINT)
    names = [OTHER.get(n, n) for n in reversed(settings.particles.names)]
    listed = ParticleTable([ParticleType(n, 100.0, 1.0, i + 1, "6X1Q" if n == "my-bgal" else "")
                            for i, n in enumerate(names)])
    cfg = copy.deepcopy(settings.config)
    cfg.train.init_checkpoint = str(DEFAULT_CHECKPOINT)
    state = build_state(cfg, settings.feature_names, listed, torch.device("cpu"))
    base = build_model(in_channels=len(settings.feature_names), num_classes=6,
                       channels=cfg.model.channels,
                       blocks_per_level=cfg.model.blocks_per_level, device="cpu")
    base.load_state_dict(read_checkpoint(DEFAULT_CHECKPOINT)["model"])
    f = torch.randn(100, cfg.model.channels[0])
    with torch.no_grad():
        now, before = state.core.cls_head(f), base.cls_head(f)
    head_now, head_before = state.core.cls_head[2], base.cls_head[2]
    for name in settings.particles.names:
        k_now, k_before = listed.class_index(OTHER.get(name, name)), \
            settings.particles.class_index(name)
        # bit for bit in the rows; the logits to float rounding (a GEMM may sum a column
        # another way at another position, as AVX-512 hosts do)
        assert torch.equal(head_now.weight[k_now], head_before.weight[k_before])
        assert torch.equal(head_now.bias[k_now], head_before.bias[k_before])
        torch.testing.assert_close(now[:, k_now], before[:, k_before], rtol=1e-5, atol=1e-6)
    thresholds, calibration = state.threshold_prior
    was, _ = settings.network_prior(cfg.postprocess.tta)
    assert thresholds == {OTHER.get(k, k): v for k, v in was.items()}
    assert "cytosolic-ribosome" in thresholds and "cytosolic-ribosome" in calibration


def test_metric_weights_follow_the_complex_not_its_spelling(tmp_path):
    """A copick config carries no weights: the competition's apply to its complexes under
    any of their names or PDB IDs (beta-amylase stays unscored), 1 to any other."""
    import json

    objects = [("beta_amylase", ""), ("TG", ""), ("target-3", "PDB-6X1Q"), ("80S", ""),
               ("proteasome", "1RYP")]
    path = tmp_path / "copick_config.json"
    path.write_text(json.dumps({"pickable_objects": [
        {"name": n, "is_particle": True, "label": i + 1, "radius": 100, "pdb_id": pdb}
        for i, (n, pdb) in enumerate(objects)]}))
    weights = {p.name: p.weight for p in ParticleTable.from_copick_config(path)}
    assert weights == {"beta_amylase": 0.0, "TG": 2.0, "target-3": 2.0, "80S": 1.0,
                       "proteasome": 1.0}


def test_other_names_bench(small_project, tmp_path):
    """bench/other_names.py: under each naming the matched picks score as under the
    competition's names; matched by exact names only, the renamed classes score 0."""
    import importlib.util
    import json
    import sys
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "other_names", Path(__file__).resolve().parents[1] / "bench" / "other_names.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "other_names.json"
    argv, sys.argv = sys.argv, ["other_names.py", "--project", str(small_project.path),
                                "--work", str(tmp_path / "views"), "--json", str(out)]
    try:
        assert bench.main() == 0
    finally:
        sys.argv = argv
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 1 + 2 * (len(bench.NAMINGS) - 1) + 2
    reference = rows["competition, matched"]
    assert reference["score"] > 0.5
    # With the portal's 50 Å radii a hit must lie within 25 Å: no more hits than at the
    # complexes' own radii, and exactly as many once --set-radii has set them.
    assert rows["data portal, radii 50 A"]["score"] <= reference["score"] + 1e-12
    assert rows["data portal, radii set"]["score"] == pytest.approx(reference["score"],
                                                                    abs=1e-12)
    for label, rename in bench.NAMINGS.items():
        matched = rows[f"{label}, matched"]
        assert matched["score"] == pytest.approx(reference["score"], abs=1e-9), label
        assert {rename.get(k, k): v for k, v in reference["per_class"].items()} == \
            pytest.approx(matched["per_class"]), label
        if rename:
            exact = rows[f"{label}, exact names only"]
            assert all(exact["per_class"][n] == 0 for n in rename.values()
                       if n in exact["per_class"]), label


def test_classes_command_shows_the_match_and_sets_placeholder_radii(small_project, tmp_path,
                                                                     capsys):
    """`python -m sparse_det.classes` on a config as the data portal's (portal names, every
    radius 50 Å): the table names each pair and its rule; --set-radii gives the far-off
    classes the checkpoint's radii, keeps the rest of the config and the one before."""
    import json

    from sparse_det.classes import main

    portal = {"apo-ferritin": "ferritin-complex", "ribosome": "cytosolic-ribosome",
              "virus-like-particle": "virus-like-capsid"}
    listed = ParticleTable([ParticleType(portal.get(p.name, p.name), 50.0, p.weight, p.label,
                                         f"PDB-{p.pdb_id}") for p in small_project.particles])
    view = small_project.config_over(tmp_path / "portal", listed, "as the portal writes it")
    config = view.config_path
    doc = json.loads(config.read_text())
    doc["overlay_fs_args"] = {"auto_mkdir": True}  # a field of the user's, to be kept
    config.write_text(json.dumps(doc))
    assert main(["--project", str(config)]) == 0
    out = capsys.readouterr().out
    assert "| cytosolic-ribosome | 50 | PDB-6EK0 | 1 | ribosome | 150 | a known other name " \
           "for it |" in out, out
    assert "note: the project's 'cytosolic-ribosome' has a radius of 50 Å" in out
    assert main(["--project", str(config), "--set-radii"]) == 0
    radii = {p.name: p.radius_A for p in ParticleTable.from_copick_config(config)}
    # apo-ferritin's 60 Å and beta-amylase's 65 Å are within 1.5x of 50 Å: left as they are.
    assert radii == {"ferritin-complex": 50.0, "beta-amylase": 50.0,
                     "beta-galactosidase": 90.0, "cytosolic-ribosome": 150.0,
                     "thyroglobulin": 130.0, "virus-like-capsid": 135.0}
    assert json.loads(config.read_text())["overlay_fs_args"] == {"auto_mkdir": True}
    before = config.with_name(config.name + ".before-set-radii")
    assert json.loads(before.read_text()) == doc
    capsys.readouterr()
    assert main(["--project", str(config), "--set-radii"]) == 0
    assert "no radius to set" in capsys.readouterr().out
    assert json.loads(before.read_text()) == doc  # the first original is kept
    assert main(["--project", str(config), "--class-map", "nothing=ribosome"]) == 2


@pytest.mark.slow  # three trainings of 50 steps (about a minute)
def test_finetune_starts_from_what_the_base_knows_under_other_names(small_project, tmp_path):
    """Fine-tuned on a project calling four classes otherwise, the base is scored on them
    as the classes it knows (until 2026-12-06: 0, and each trained from nothing), and the
    checkpoint written calls them as the project does."""
    from sparse_det.finetune import main
    from sparse_det.stream import infer_project

    project = relabelled(small_project, tmp_path / "named", rename=OTHER, keep_pdb=True)
    out = tmp_path / "ft.pt"
    assert main(["--project", str(project.path), "--out", str(out), "--steps", "50",
                 "--device", "cpu", "--quiet"]) == 0
    doc = read_checkpoint(out)
    base = doc["extra"]["finetune"]["per_class"]["base"]
    # Measured: 0.965-1.000 for the four on the two small runs (weighted 0.993).
    assert all(base[n] > 0.6 for n in OTHER.values()), base
    assert doc["extra"]["finetune"]["base"] == str(DEFAULT_CHECKPOINT)
    assert [p["name"] for p in doc["particles"]] == project.particles.names
    assert set(OTHER.values()) <= set(infer_project(project, out, device="cpu")["particle_type"])


def test_a_table_finds_a_class_by_another_name():
    listed = table(("cytosolic-ribosome", ""), ("apo-ferritin", ""), ("Beta_Gal", ""),
                   ("vlp-a", ""), ("VLP", ""))
    assert listed.called("cytosolic-ribosome") == "cytosolic-ribosome"
    assert listed.called("ribosome") == "cytosolic-ribosome"
    assert listed.called("Apoferritin") == "apo-ferritin"
    assert listed.called("beta-galactosidase") == "Beta_Gal"
    assert listed.called("virus-like-particle") == "VLP"
    assert listed.called("thyroglobulin") is None
    # A competition complex is also found by its PDB ID, where no name gives it.
    assert table(("target-5", "PDB-6SCJ")).called("thyroglobulin") == "target-5"
    assert table(("a", "6SCJ"), ("b", "6SCJ")).called("thyroglobulin") is None


def test_competition_picks_import_into_a_config_of_other_names(small_project, tmp_path,
                                                               caplog):
    """The competition's CSV (its names) into a project calling two classes otherwise: each
    pick goes to the class it names there, and a name of no class is still refused."""
    from data_tools.copick_io import CopickProject
    from sparse_det.import_picks import main

    project = relabelled(small_project, tmp_path / "named", rename=OTHER, keep_pdb=True)
    run = project.runs()[0]
    csv = tmp_path / "picks.csv"
    pd.DataFrame({"id": [0, 1, 2], "experiment": run,
                  "particle_type": ["ribosome", "apo-ferritin", "thyroglobulin"],
                  "x": [100.0, 200.0, 300.0], "y": [300.0, 400.0, 500.0],
                  "z": [50.0, 60.0, 70.0]}).to_csv(csv, index=False)
    with caplog.at_level("INFO"):
        assert main([str(csv), "--project", str(project.path), "--user-id", "bob"]) == 0
    assert "particle 'ribosome' read as the project's 'cytosolic-ribosome'" in caplog.text
    bob = CopickProject(project.path, truth_user="bob").read_picks(run)
    assert {k: v.tolist() for k, v in bob.items() if len(v)} == {
        "cytosolic-ribosome": [[100.0, 300.0, 50.0]], "Apo_Ferritin": [[200.0, 400.0, 60.0]],
        "thyroglobulin": [[300.0, 500.0, 70.0]]}
    pd.read_csv(csv).assign(particle_type="proteasome").to_csv(csv, index=False)
    assert main([str(csv), "--project", str(project.path), "--user-id", "carol"]) == 2


def test_evaluate_reads_a_submissions_names_as_the_project_calls_them(small_project,
                                                                      full_picks, tmp_path):
    """A submission in the competition's names, scored against a project calling four
    classes otherwise: the score it has against the same runs under the same names."""
    from sparse_det.evaluate import evaluate
    from sparse_det.writers import to_submission, write_submission

    csv = tmp_path / "submission.csv"
    write_submission(to_submission(full_picks), csv)
    project = relabelled(small_project, tmp_path / "named", rename=OTHER, keep_pdb=True)
    same = evaluate(small_project.path, csv)
    other = evaluate(project.path, csv)
    assert other.score == pytest.approx(same.score, abs=1e-12) and same.score > 0.5
    assert {OTHER.get(k, k): c.fbeta for k, c in same.per_class.items()} == \
        {k: c.fbeta for k, c in other.per_class.items()}


def test_picks_go_into_a_copick_config_given_as_picks_out(small_project, tmp_path):
    """`infer --picks-out CONFIG.json` (a copick project named by its config, as copick's
    own tools name one): the picks land in that config's overlay under its class names.
    Until 2026-12-06 a config file was refused ("cannot create output folder")."""
    from data_tools.copick_io import CopickProject
    from sparse_det.infer import main

    portal = {"ribosome": "cytosolic-ribosome"}
    listed = ParticleTable([replace(p, name=portal.get(p.name, p.name))
                            for p in small_project.particles])
    config = small_project.config_over(tmp_path / "view", listed, "a view").config_path
    out = tmp_path / "picks.csv"
    assert main(["--project", str(config), "--out", str(out), "--device", "cpu", "--quiet",
                 "--picks-out", str(config)]) == 0
    csv = pd.read_csv(out)
    mine = CopickProject(config, truth_user="sparse-det").read_picks(small_project.runs()[0])
    run0 = csv[csv["experiment"] == small_project.runs()[0]]
    assert len(mine["cytosolic-ribosome"]) == (run0["particle_type"] == "cytosolic-ribosome"
                                                ).sum() > 0
    assert (tmp_path / "view" / "overlay").is_dir() and not (tmp_path / "view" / "static"
                                                             ).exists()


def test_tune_writes_thresholds_under_the_projects_names(small_project, tmp_path, capsys):
    """`tune` on a project calling four classes otherwise: the checkpoint it writes calls
    them so, with thresholds tuned on their annotations (F4 as under the competition's
    names), and the renamed copy it tuned is not left beside --out."""
    from sparse_det.tune import main

    project = relabelled(small_project, tmp_path / "named", rename=OTHER, keep_pdb=True)
    out = tmp_path / "tuned" / "t.pt"
    out.parent.mkdir()
    assert main(["--checkpoint", str(DEFAULT_CHECKPOINT), "--project", str(project.path),
                 "--out", str(out), "--device", "cpu"]) == 0
    said = capsys.readouterr()
    assert "'cytosolic-ribosome' is the checkpoint's 'ribosome'" in said.err, said.err
    settings = checkpoint_settings(out)
    assert settings.particles.names == [OTHER.get(n, n) for n in
                                        checkpoint_settings(DEFAULT_CHECKPOINT).particles.names]
    assert set(OTHER.values()) <= set(settings.thresholds)
    assert sorted(p.name for p in out.parent.iterdir()) == ["t.pt"]
    per_class = read_checkpoint(out)["extra"]["tuned_per_run"]
    assert per_class  # tuned on the project's annotated runs
    same = tmp_path / "same.pt"
    assert main(["--checkpoint", str(DEFAULT_CHECKPOINT), "--project", str(small_project.path),
                 "--out", str(same), "--device", "cpu"]) == 0
    assert {OTHER.get(k, k): v for k, v in checkpoint_settings(same).thresholds.items()} == \
        pytest.approx(settings.thresholds)


def test_distillation_reads_the_classes_the_init_knew():
    """loss.distill_weight from a checkpoint on a table with a class new to it: the frozen
    copy is the init, and the term's labels are background and the checkpoint's classes,
    not the new one (whose zero row is no knowledge to keep)."""
    from sparse_det.train_state import build_state

    settings = checkpoint_settings(DEFAULT_CHECKPOINT)
    listed = ParticleTable([*settings.particles.particles,
                            ParticleType("proteasome", 80.0, 1.0, 7, "1RYP")])
    cfg = copy.deepcopy(settings.config)
    cfg.train.init_checkpoint, cfg.loss.distill_weight = str(DEFAULT_CHECKPOINT), 1.0
    state = build_state(cfg, settings.feature_names, listed, torch.device("cpu"))
    assert state.teacher_labels.tolist() == list(range(len(settings.particles) + 1))
    assert not state.teacher.training
    assert listed.class_index("proteasome") == len(settings.particles) + 1
    for k, v in state.teacher.state_dict().items():
        torch.testing.assert_close(v, state.core.state_dict()[k], rtol=0, atol=0)
    cfg.loss.distill_weight = 0.0
    assert build_state(cfg, settings.feature_names, listed,
                       torch.device("cpu")).teacher is None
