"""State dicts: telling the deploy (fused) form of a model's state dict
from another model's."""
from repvgg_seg.io.state_dict import is_fused_form
from repvgg_seg.models import RepVGG, deploy_copy
from tests.helpers import TINY_ARCHS


def test_state_dicts_that_differ_in_more_than_the_form_get_no_form_hint():
    arch = TINY_ARCHS['minimal']
    model = RepVGG(arch)
    training, deploy = model.state_dict(), deploy_copy(model).state_dict()
    assert is_fused_form(training, deploy)
    assert not is_fused_form(deploy, training)
    other = RepVGG(dict(arch, width_factor=(0.5,) * 4))
    assert not is_fused_form(other.state_dict(), deploy)  # other widths
    fewer = {k: v for k, v in deploy.items() if not k.startswith('stage4.')}
    assert not is_fused_form(training, fewer)
