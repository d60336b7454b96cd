"""Data for the course: the shapes generator, its Dataset, transforms and COCO reading/writing.

``from lessons_pkg import data`` then ``data.make_split("train", 512)``, ``data.CocoDataset(root)``,
``data.SingleObjectTensors(data.make_split("train", 1024, config="single"))``.
"""
from .coco import CocoDataset, coco_results, export_coco, mask_to_rle
from .dataset import (SPLIT_SEEDS, ShapesDataset, apply_transforms, class_counts, collate_detection,
                      make_split, scene_to_sample, unwrap_tv_tensors, wrap_tv_tensors)
from .shapes import ALL_SHAPES, Scene, ShapesConfig, masks_to_boxes_np, preset, render_scene, shape_mask
from .single_object import SingleObjectTensors
from .transforms import (ResizedImages, detection_augmentation, resize_to_limits, segmentation_augmentation,
                         to_original_size)

__all__ = [
    "ALL_SHAPES", "CocoDataset", "ResizedImages", "coco_results", "to_original_size", "SPLIT_SEEDS", "Scene", "ShapesConfig", "ShapesDataset",
    "SingleObjectTensors", "apply_transforms",
    "class_counts", "collate_detection", "detection_augmentation", "segmentation_augmentation", "export_coco", "make_split",
    "mask_to_rle", "masks_to_boxes_np", "preset", "render_scene", "resize_to_limits", "scene_to_sample", "shape_mask",
    "unwrap_tv_tensors", "wrap_tv_tensors",
]
