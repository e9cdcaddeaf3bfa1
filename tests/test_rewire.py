"""The config-level engine: site discovery and state rewiring, without Keras."""

import copy
import json
import zipfile

import pytest

from conftest import CATALOG_ENTRIES, FIXTURES, catalog_files, is_rewirable
from surgery.errors import NotSupportedError, UsageError
from surgery.graph.rewire import rewire_states
from surgery.graph.sites import find_sites


def config_of(name):
    with zipfile.ZipFile(FIXTURES / name) as archive:
        return json.loads(archive.read("config.json"))


REWIRABLE = catalog_files(is_rewirable)
ENTRY = {entry["file"]: entry for entry in CATALOG_ENTRIES}


@pytest.mark.parametrize("name", REWIRABLE)
def test_sites_match_what_the_fixture_builder_made(name):
    """Every recurrent layer the builder created is found, once per call, in nested models too."""
    sites = find_sites(config_of(name))
    expected = sorted(
        (layer["name"], call) for layer in ENTRY[name]["recurrent_layers"] for call in range(layer["calls"])
    )
    assert sorted((s.layer, s.call_index) for s in sites) == expected
    for layer in ENTRY[name]["recurrent_layers"]:
        nested = [s for s in sites if s.layer == layer["name"]]
        assert all(s.model_path == ((layer["nested_in"],) if layer["nested_in"] else ()) for s in nested)
        assert all(s.return_sequences == layer["return_sequences"] for s in nested)


@pytest.mark.parametrize("name", REWIRABLE)
def test_rewire_outputs_and_inputs_name_every_state_by_convention(name):
    config = config_of(name)
    before = copy.deepcopy(config)
    new_config, plan = rewire_states(config, outputs=True, inputs=True)
    assert config == before, "the input config must not be mutated"
    sites = find_sites(config)
    expected_out = [s.output_name for site in sites for s in site.states]
    assert [s.name for s in plan.outputs] == expected_out
    fed = {site.name for site in sites if site.fed_by_graph}
    expected_in = [s.input_name for site in sites if site.name not in fed for s in site.states]
    assert [s.name for s in plan.inputs] == expected_in
    assert {site for site, _ in plan.skipped} == fed
    for state in (*plan.outputs, *plan.inputs):
        assert state.name.replace("_", "").isalnum()
        assert all(isinstance(d, int) and d > 0 for d in state.shape)
    top = new_config["config"]
    outputs = top["output_layers"]
    assert [ref[0] for ref in outputs[-len(plan.outputs):]] == expected_out
    inputs = top["input_layers"]
    if plan.inputs:
        assert [ref[0] for ref in inputs[-len(plan.inputs):]] == expected_in


def test_state_shapes_follow_the_layer_kind():
    by_name = {site.name: site for name in ("bidirectional.keras", "convlstm2d.keras", "rnn_stacked_cells.keras",
                                              "gru.keras", "lstm_shared.keras", "lstm_nested.keras")
               for site in find_sites(config_of(name))}
    assert [s.role for s in by_name["bi1"].states] == ["fw_h", "fw_c", "bw_h", "bw_c"]
    assert by_name["bi1"].states[0].shape == (6,)
    assert [s.role for s in by_name["stacked"].states] == ["cell0_h", "cell0_c", "cell1_h"]
    assert [s.shape for s in by_name["stacked"].states] == [(6,), (6,), (4,)]
    assert [s.role for s in by_name["gru"].states] == ["h"]
    assert by_name["conv_lstm2d"].states[0].shape == (8, 8, 3)
    assert "shared_lstm__1" in by_name
    assert "inner__inner_lstm" in by_name


def test_selecting_one_layer_exposes_only_that_layer():
    _, plan = rewire_states(config_of("lstm_stacked.keras"), layers=["lstm_1"])
    assert [s.name for s in plan.outputs] == ["lstm_1_h", "lstm_1_c"]


def test_selecting_a_nested_model_selects_its_layers():
    _, plan = rewire_states(config_of("lstm_nested.keras"), layers=["inner"])
    assert [s.name for s in plan.outputs] == ["inner__inner_lstm_h", "inner__inner_lstm_c"]


def test_unknown_layer_is_a_usage_error_that_lists_the_choices():
    with pytest.raises(UsageError, match="no recurrent layer named 'nope'.*lstm_1"):
        rewire_states(config_of("lstm_stacked.keras"), layers=["nope"])


def test_model_without_recurrent_layers_is_a_usage_error():
    config = {"class_name": "Sequential", "config": {"name": "s", "layers": [
        {"class_name": "InputLayer", "config": {"batch_shape": [None, 3], "dtype": "float32", "name": "i"}},
        {"class_name": "Dense", "config": {"name": "d", "units": 1}, "build_config": {"input_shape": [None, 3]}},
    ]}}
    with pytest.raises(UsageError, match="no recurrent"):
        rewire_states(config)


def test_subclassed_model_is_not_supported_and_says_why():
    with pytest.raises(NotSupportedError, match="subclassed"):
        rewire_states(config_of("subclassed.keras"))


def test_stateful_layers_become_explicit_state():
    new_config, _ = rewire_states(config_of("stateful.keras"), inputs=True)
    layers = {layer["name"]: layer for layer in new_config["config"]["layers"]}
    assert layers["stateful_lstm"]["config"]["stateful"] is False


def test_nothing_to_do_is_a_usage_error():
    with pytest.raises(UsageError, match="nothing to do"):
        rewire_states(config_of("gru.keras"), outputs=False, inputs=False)


def test_selecting_a_nested_site_by_its_full_name():
    _, plan = rewire_states(config_of("lstm_nested.keras"), layers=["inner__inner_lstm"])
    assert [s.name for s in plan.outputs] == ["inner__inner_lstm_h", "inner__inner_lstm_c"]
