# The Table 5 (200 epochs) model: label smoothing 0.1 and mixup (alpha 0.2).
#
# Label smoothing as the official code's LabelSmoothingCrossEntropy / timm's
# mixup targets: (1 - eps) * onehot + eps / K, i.e. mmpretrain's 'original'
# mode (not 'classy_vision'). LabelSmoothLoss accepts the soft (mixed) labels
# Mixup produces.
#
# Mixup is applied by the data preprocessor to whole batches: mmpretrain 1.2's
# ImageClassifier passes train_cfg to ClsDataPreprocessor(batch_augments=...),
# which needs data_preprocessor.num_classes for the one-hot labels. The
# official code uses mixup (alpha 0.2) for the B2/B3 models; every 200-epoch
# config here is a B2 or B3 model (Table 5 and "B2 and its g2/g4 variants
# are trained in both settings").
_base_ = './repvgg_cls.py'
model = dict(
    head=dict(
        loss=dict(
            _delete_=True,
            type='LabelSmoothLoss',
            label_smooth_val=0.1,
            mode='original',
            loss_weight=1.0)),
    train_cfg=dict(augments=dict(type='Mixup', alpha=0.2)))
