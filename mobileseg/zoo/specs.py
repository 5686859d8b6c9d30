"""The zoo's model specs: everything about a model that a user or a tool needs without building it.

This module imports no PyTorch, so names, input-size rules and normalisations are checked at once (the
CLI rejects a mistake before any heavy library loads). Each spec names its network and its checkpoint key
renames by ``"module:attribute"``; they are imported when the model is built. Adding a model is its
network file (``zoo/<family>.py``) and one `register` call here.
"""

from __future__ import annotations

from mobileseg.zoo._registry import Checkpoint, ModelSpec, Normalization, register

__all__ = ["PORTRAIT_NORMALIZATION", "CITYSCAPES_NORMALIZATION", "CITYSCAPES_CLASSES", "C3NET_CLASSES"]

# EG1800 statistics, standardised in 0..255 space then divided by 255. The authors read images with
# OpenCV, so the statistics and the trained network are in BGR order.
PORTRAIT_NORMALIZATION = Normalization(
    mean=(113.05697 / 255, 120.847824 / 255, 133.786 / 255),
    std=(65.05263, 65.393776, 67.238205),
    channel_order="bgr",
)

# Cityscapes statistics stored by the authors (OpenCV, BGR order), standardised in 0..255 then / 255.
CITYSCAPES_NORMALIZATION = Normalization(
    mean=(72.39231 / 255, 82.908936 / 255, 73.1584 / 255),
    std=(45.31922, 46.152893, 44.914833),
    channel_order="bgr",
)

CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)  # fmt: skip
C3NET_CLASSES = (*CITYSCAPES_CLASSES, "void")


register(
    ModelSpec(
        name="sinet",
        description="SINet portrait segmentation (S2 modules, information-blocking decoder), EG1800",
        num_classes=2,
        input_size=(224, 224),
        size_multiple=32,
        size_rule="S2 blocks average-pool by up to 4 at stride 8 and must upsample back exactly",
        output_stride=1,
        output_kind="softmax_logits",
        normalization=PORTRAIT_NORMALIZATION,
        params=86_910,
        checkpoint=Checkpoint(
            filename="sinet_portrait_eg1800.pth",
            sha256="d164a9643c6e6765fc6dd4ec73f6018ad2526c21336911b4484715f33e6981a4",
            source="clovaai/ext_portrait_segmentation@9bc1bad:result/SINet/SINet.pth",
        ),
        paper="arXiv:1911.09099",
        class_names=("background", "person"),
        network="mobileseg.zoo.sinet:SINet",
        network_args={"num_classes": 2},
        key_rules_ref="mobileseg.zoo.sinet:SINET_KEY_RULES",
    )
)

register(
    ModelSpec(
        name="extremec3net",
        description="ExtremeC3Net portrait segmentation (advanced C3 modules, coarse + fine branches), EG1800",
        num_classes=1,
        input_size=(224, 224),
        size_multiple=4,
        size_rule="the coarse branch at H/4 is upsampled ×2 and summed with the fine branch at H/2",
        output_stride=1,
        output_kind="sigmoid_logit",
        normalization=PORTRAIT_NORMALIZATION,
        params=37_738,
        checkpoint=Checkpoint(
            filename="extremec3net_portrait_eg1800.pth",
            sha256="52ff1681c7f65899f203106a64562c3a709172f3a65aa1ad5bef7bb9a22a39db",
            source="clovaai/ext_portrait_segmentation@9bc1bad:result/ExtremeC3/ExtremeC3.pth",
        ),
        paper="arXiv:1908.03093",
        class_names=("person",),
        network="mobileseg.zoo.extremec3net:ExtremeC3Net",
        network_args={"num_classes": 1},
        key_rules_ref="mobileseg.zoo.extremec3net:EXTREMEC3NET_KEY_RULES",
    )
)

register(
    ModelSpec(
        name="sinet-cityscapes",
        description="SINet-Large with S2+ blocks, Cityscapes (19 classes, logits at H/2)",
        num_classes=19,
        input_size=(1024, 2048),
        size_multiple=128,
        size_rule="S2+ blocks average-pool by up to 8 at stride 16 and must upsample back exactly",
        output_stride=2,
        output_kind="softmax_logits",
        normalization=CITYSCAPES_NORMALIZATION,
        params=119_418,
        checkpoint=Checkpoint(
            filename="sinet_cityscapes.pth",
            sha256="aecc10ab0d8d7b0c3dd86569fc3a3b91b3bd72ca485f96319afb3ef591558dcc",
            source="clovaai/c3_sinet@dd91638:result/SINet/SINet.pth",
        ),
        paper="dissertation Table 4.6; arXiv:1911.09099",
        class_names=CITYSCAPES_CLASSES,
        network="mobileseg.zoo.sinet_cityscapes:SINetCityscapes",
        network_args={"num_classes": 19},
        key_rules_ref="mobileseg.zoo.sinet_cityscapes:SINET_CITYSCAPES_KEY_RULES",
    )
)

register(
    ModelSpec(
        name="c3net",
        description="C3Net = C3-MESP2 (C3 blocks, d = 2, 3, 7, 13), Cityscapes (19 classes + void)",
        num_classes=20,
        input_size=(512, 1024),
        size_multiple=8,
        size_rule="three stride-2 stages are undone by three ×2 transposed convolutions with skip concatenations",
        output_stride=1,
        output_kind="softmax_logits",
        normalization=CITYSCAPES_NORMALIZATION,
        params=191_614,
        checkpoint=Checkpoint(
            filename="c3net_cityscapes.pth",
            sha256="4f80e0f059e8ca77d0d1029fc66d7f0143ab03e950c2a5550d879cda8cd965a3",
            source="clovaai/c3_sinet@dd91638:result/C3Net/C3Net_setting2.pth",
        ),
        paper="arXiv:1812.04920",
        class_names=C3NET_CLASSES,
        network="mobileseg.zoo.c3net:C3Net",
        network_args={"num_classes": 20, "dilations": (2, 3, 7, 13)},
        key_rules_ref="mobileseg.zoo.c3net:C3NET_KEY_RULES",
    )
)

register(
    ModelSpec(
        name="c3netv2",
        description="C3NetV2 = C3-MESP1 (C3 blocks, d = 2, 4, 8, 16), bilinear decoder, Cityscapes (19 + void)",
        num_classes=20,
        input_size=(512, 1024),
        size_multiple=8,
        size_rule="three stride-2 stages are undone by three ×2 upsamplings with skip concatenations",
        output_stride=1,
        output_kind="softmax_logits",
        normalization=CITYSCAPES_NORMALIZATION,
        params=187_378,
        checkpoint=Checkpoint(
            filename="c3netv2_cityscapes.pth",
            sha256="45e2aeeb4ae513746a98a9dd4e59bcf578a614baa9a9e2a97ef6bc9927d235c6",
            source="clovaai/c3_sinet@dd91638:result/C3NetV2/C3NetV2_setting1.pth",
        ),
        paper="dissertation Table 4.2 (C3-MESP1)",
        class_names=C3NET_CLASSES,
        network="mobileseg.zoo.c3netv2:C3NetV2",
        network_args={"num_classes": 20, "dilations": (2, 4, 8, 16)},
        key_rules_ref="mobileseg.zoo.c3netv2:C3NETV2_KEY_RULES",
    )
)


# ---- structure only: no trained weights of these can be fetched here (`zoo.structure_only`) ----------------

IMAGENET_NORMALIZATION = Normalization(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
TF_INCEPTION_NORMALIZATION = Normalization(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))  # TF's 2x/255 − 1
CAMVID_CLASSES = (
    "sky", "building", "pole", "road", "pavement", "tree", "sign", "fence", "car", "pedestrian", "bicyclist",
)  # fmt: skip
SUNRGBD_CLASSES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf", "picture", "counter",
    "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror", "floor mat", "clothes", "ceiling", "books",
    "fridge", "tv", "paper", "towel", "shower curtain", "box", "whiteboard", "person", "night stand", "toilet", "sink",
    "lamp", "bathtub", "bag",
)  # fmt: skip
_SEGNET_SIZE_RULE = "any size: pooling rounds up and unpooling restores each encoder map's size"

for _name, _classes, _size, _basic, _params, _what in (
    ("segnet", CAMVID_CLASSES, (360, 480), False, 29_449_355, "SegNet (VGG-16 encoder, max-unpooling decoder), CamVid 11 classes"),
    ("segnet-basic", CAMVID_CLASSES, (360, 480), True, 1_416_075, "SegNet-Basic (4 + 4 stages of 64 7×7 maps), CamVid 11 classes"),
    ("segnet-sunrgbd", SUNRGBD_CLASSES, (224, 224), False, 29_464_357, "SegNet (VGG-16 encoder, max-unpooling decoder), SUN RGB-D 37 classes"),
):  # fmt: skip
    register(
        ModelSpec(
            name=_name, description=_what, num_classes=len(_classes), input_size=_size, size_multiple=1,
            size_rule=_SEGNET_SIZE_RULE, output_stride=1, output_kind="softmax_logits",
            normalization=IMAGENET_NORMALIZATION, params=_params, checkpoint=None,
            paper="arXiv:1511.00561; seed 003 (SegNet notes)", class_names=_classes,
            network="mobileseg.zoo.segnet:SegNet", network_args={"num_classes": len(_classes), "basic": _basic},
            key_rules_ref="mobileseg.zoo.segnet:" + ("SEGNET_BASIC_KEY_RULES" if _basic else "SEGNET_KEY_RULES"),
            calibration_size=(180, 240) if _size == (360, 480) else (224, 224),
        )
    )

# Kolhatkar (2020), Ch. 4: the 19 Cityscapes classes at 2048×1024; parameter counts as Table 4.2 gives them
# (TensorFlow's graph variables: BN's moving statistics included).
for _name, _encoder, _args, _params, _what in (
    ("sqznet-base", "squeezenet", {}, 732_243, "SqueezeNet 1.1 encoder (stride 16), bilinear decoder"),
    ("sqznet-fcn8", "squeezenet", {"skips": 1}, 740_470, "SqueezeNet 1.1 encoder, one FCN skip step (stride 8)"),
    ("sqznet-stride8", "squeezenet", {"output_stride": 8}, 732_243, "SqueezeNet 1.1 encoder at output stride 8 (dilated)"),
    ("mn-base", "mobilenet", {}, 839_283, "MobileNet-v1 ×0.5 encoder (stride 32), bilinear decoder"),
    ("mn-fcn16", "mobilenet", {"skips": 1}, 849_942, "MobileNet-v1 ×0.5 encoder, FCN-16 decoder"),
    ("mn-fcn8", "mobilenet", {"skips": 2}, 858_169, "MobileNet-v1 ×0.5 encoder, FCN-8 decoder"),
    ("mn-stride16", "mobilenet", {"output_stride": 16}, 839_283, "MobileNet-v1 ×0.5 encoder at output stride 16 (dilated)"),
    ("mn-stride8", "mobilenet", {"output_stride": 8}, 839_283, "MobileNet-v1 ×0.5 encoder at output stride 8 (dilated)"),
):  # fmt: skip
    _multiple = 32 if _encoder == "mobilenet" else 16
    register(
        ModelSpec(
            name=_name, description=f"{_what}, Cityscapes 19 classes (thesis Table 4.2)", num_classes=19,
            input_size=(1024, 2048), size_multiple=_multiple,
            size_rule=f"the encoder's stride-2 layers halve the input {_multiple.bit_length() - 1} times (TF 'SAME' sizes)",
            output_stride=1, output_kind="softmax_logits", normalization=TF_INCEPTION_NORMALIZATION, params=_params,
            checkpoint=None, paper="Kolhatkar, M.A.Sc. thesis, U. Ottawa 2020 (seed 004), Ch. 4",
            class_names=CITYSCAPES_CLASSES, network="mobileseg.zoo.fcn:SemanticFCN",
            network_args={"encoder": _encoder, "num_classes": 19, **_args},
            key_rules_ref="mobileseg.zoo.fcn:" + ("MOBILENET_KEY_RULES" if _encoder == "mobilenet" else "SQUEEZENET_KEY_RULES"),
            params_counted="variables" if _encoder == "mobilenet" else "parameters", calibration_size=(256, 512),
        )
    )
