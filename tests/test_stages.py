import collections
import dataclasses

import pytest

from avlib.datasets import DataError
from avlib.stages import repeat_kinds, stage_examples


def with_repeats(params, repeats):
    return dataclasses.replace(params, finetune=dataclasses.replace(params.finetune, kind_repeats=repeats))


def test_finetuning_draws_each_example_of_a_kind_named_as_often_as_it_says(small_params, small_corpus):
    once = stage_examples(small_corpus, "finetune", with_repeats(small_params, {}))
    twice = stage_examples(small_corpus, "finetune", with_repeats(small_params, {"background": 2, "shape": 1}))
    counts_once, counts_twice = collections.Counter(e.kind for e in once), collections.Counter(e.kind for e in twice)
    assert counts_once["background"] > 0
    assert counts_twice == counts_once + collections.Counter({"background": counts_once["background"]})
    assert [e.id for e in twice if e.kind != "background"] == [e.id for e in once if e.kind != "background"]


def test_other_stages_and_calls_without_params_draw_every_example_once(small_params, small_corpus):
    repeated = with_repeats(small_params, {"background": 3})
    assert stage_examples(small_corpus, "pretrain_vision", repeated) == stage_examples(small_corpus, "pretrain_vision", small_params)
    plain = stage_examples(small_corpus, "finetune")
    assert len(plain) == len({e.id for e in plain})


def test_a_repeated_kind_no_example_has_is_refused_naming_the_kinds_there(small_params, small_corpus):
    with pytest.raises(DataError, match=r"finetune.kind_repeats names \['backgruond'\].*the kinds here are \[.*'background'"):
        stage_examples(small_corpus, "finetune", with_repeats(small_params, {"backgruond": 2}))


def test_a_kind_given_once_need_not_be_in_the_data():
    examples = [dataclasses.make_dataclass("E", ["kind"])("")] * 3  # real data: no kinds
    assert repeat_kinds(examples, {"background": 1}) == examples
