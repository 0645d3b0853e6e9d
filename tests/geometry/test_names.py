"""Structure names: TG-263 organ synonyms, target levels read from names, the --targets override."""
import pytest

from medhash.errors import InputError
from medhash.geometry import organ_name, parse_targets, structure_roles, target_level


@pytest.mark.parametrize("name", ["Parotid_L", "LeftParotid", "L Parotid", "PAROTID LT", "parotid-left", "Lt_Parotid"])
def test_every_spelling_of_the_left_parotid_meets(name):
    assert organ_name(name) == "Parotid_L"


@pytest.mark.parametrize("name,canon", [("RightParotid", "Parotid_R"), ("Mandible", "Bone_Mandible"),
                                        ("Spinal Cord", "SpinalCord"), ("CORD", "SpinalCord"),
                                        ("Brain Stem", "Brainstem"), ("Oesophagus", "Esophagus")])
def test_synonyms_map_to_tg263(name, canon):
    assert organ_name(name) == canon


def test_unknown_names_and_targets_are_no_organ():
    assert organ_name("Brain") is None
    assert organ_name("PTV70") is None
    assert organ_name("External") is None


@pytest.mark.parametrize("name,level", [("PTV70", 70.0), ("PTV_70", 70.0), ("PTV70Gy", 70.0), ("PTV 70.0", 70.0),
                                        ("PTV_7000", 70.0), ("PTV5600cGy", 56.0), ("ptv-63", 63.0),
                                        ("CTV56", 56.0), ("PTV_54,5", 54.5)])
def test_target_levels_are_read_from_names(name, level):
    assert target_level(name) == pytest.approx(level)


@pytest.mark.parametrize("name", ["PTV", "PTV_high", "Parotid_L", "PTV0", "PTV_99999"])
def test_names_without_a_plausible_level_have_none(name):
    assert target_level(name) is None


def test_parse_targets_reads_name_equals_gy_pairs():
    assert parse_targets("PTV_high=70, PTV_low=56") == {"PTV_high": 70.0, "PTV_low": 56.0}
    assert parse_targets(None) == {} and parse_targets("") == {}


@pytest.mark.parametrize("text", ["PTV_high", "PTV_high=seventy", "PTV_high=0", "PTV_high=500", "=70"])
def test_parse_targets_refuses_what_is_no_level(text):
    with pytest.raises(InputError) as e:
        parse_targets(text)
    assert e.value.param == "targets"


def test_roles_prefer_ptvs_over_ctvs_and_apply_overrides():
    levels, organs = structure_roles(["PTV70", "CTV70", "PTV56", "PTV_boost", "LeftParotid", "Parotid_L", "Cord",
                                      "Body"], {"PTV_boost": 66})
    assert levels == {70.0: ["PTV70"], 66.0: ["PTV_boost"], 56.0: ["PTV56"]}
    assert list(levels) == [70.0, 66.0, 56.0]                  # highest first
    assert organs == {"Parotid_L": "LeftParotid", "SpinalCord": "Cord"}


def test_ctvs_are_targets_when_the_set_has_no_ptv():
    levels, _ = structure_roles(["CTV60", "GTV70"])
    assert levels == {70.0: ["GTV70"], 60.0: ["CTV60"]}
