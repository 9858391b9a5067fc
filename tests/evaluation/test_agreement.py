"""The agreement measures of a deployed model with torch
(:mod:`repvgg_seg.evaluation.agreement`): per image, and pooled over
images."""
import torch


def test_pooled_agreement_known_answer():
    from repvgg_seg.evaluation.agreement import pooled_agreement
    pooled = pooled_agreement([
        dict(max_rel_error=0.01, argmax_agreement_pct=99.0),
        dict(max_rel_error=0.03, argmax_agreement_pct=100.0),
        dict(max_rel_error=0.02, argmax_agreement_pct=99.5)])
    assert pooled == dict(max_rel_error=0.03, argmax_agreement_pct=99.5,
                          min_image_agreement_pct=99.0, images=3)


def test_agreement_helper():
    from repvgg_seg.evaluation.agreement import agreement
    ref = torch.randn(1, 4, 8, 8)
    same = agreement(ref, ref.clone())
    assert same == dict(max_rel_error=0.0, argmax_agreement_pct=100.0)
