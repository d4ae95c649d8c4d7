"""A tiny SAM 2.1 for the ``sam2`` family's tests: the package's SAM 2.1 network layout
(``configs/sam2.1/sam2.1_hiera_t.yaml``) with a small Hiera (8 channels, 5 blocks), a
32-channel neck and memory, random weights saved in the official checkpoint layout
``{"model": state_dict}``. Written to a folder as a hydra config file, so that the tests
load it by path through the package's builder and loader, as a user's MedSAM2
``sam2.1_hiera_t512.yaml`` is loaded. The hypernetwork biases and the object-score bias
are set so that random weights give masks that are neither empty nor full."""

from __future__ import annotations

from pathlib import Path

TINY_SAM2_YAML = """\
# @package _global_
# A tiny SAM 2.1 (sam2.1_hiera_t.yaml's layout, small widths) for MedSegFlow's tests.
model:
  _target_: sam2.modeling.sam2_base.SAM2Base
  image_encoder:
    _target_: sam2.modeling.backbones.image_encoder.ImageEncoder
    scalp: 1
    trunk:
      _target_: sam2.modeling.backbones.hieradet.Hiera
      embed_dim: 8
      num_heads: 1
      stages: [1, 1, 2, 1]
      global_att_blocks: [3]
      window_pos_embed_bkg_spatial_size: [7, 7]
    neck:
      _target_: sam2.modeling.backbones.image_encoder.FpnNeck
      position_encoding:
        _target_: sam2.modeling.position_encoding.PositionEmbeddingSine
        num_pos_feats: 32
        normalize: true
        scale: null
        temperature: 10000
      d_model: 32
      backbone_channel_list: [64, 32, 16, 8]
      fpn_top_down_levels: [2, 3]
      fpn_interp_model: nearest
  memory_attention:
    _target_: sam2.modeling.memory_attention.MemoryAttention
    d_model: 32
    pos_enc_at_input: true
    layer:
      _target_: sam2.modeling.memory_attention.MemoryAttentionLayer
      activation: relu
      dim_feedforward: 64
      dropout: 0.1
      pos_enc_at_attn: false
      self_attention:
        _target_: sam2.modeling.sam.transformer.RoPEAttention
        rope_theta: 10000.0
        feat_sizes: [64, 64]
        embedding_dim: 32
        num_heads: 1
        downsample_rate: 1
        dropout: 0.1
      d_model: 32
      pos_enc_at_cross_attn_keys: true
      pos_enc_at_cross_attn_queries: false
      cross_attention:
        _target_: sam2.modeling.sam.transformer.RoPEAttention
        rope_theta: 10000.0
        feat_sizes: [64, 64]
        rope_k_repeat: True
        embedding_dim: 32
        num_heads: 1
        downsample_rate: 1
        dropout: 0.1
        kv_in_dim: 16
    num_layers: 1
  memory_encoder:
    _target_: sam2.modeling.memory_encoder.MemoryEncoder
    out_dim: 16
    in_dim: 32
    position_encoding:
      _target_: sam2.modeling.position_encoding.PositionEmbeddingSine
      num_pos_feats: 16
      normalize: true
      scale: null
      temperature: 10000
    mask_downsampler:
      _target_: sam2.modeling.memory_encoder.MaskDownSampler
      embed_dim: 32
      kernel_size: 3
      stride: 2
      padding: 1
    fuser:
      _target_: sam2.modeling.memory_encoder.Fuser
      layer:
        _target_: sam2.modeling.memory_encoder.CXBlock
        dim: 32
        kernel_size: 7
        padding: 3
        layer_scale_init_value: 1e-6
        use_dwconv: True
      num_layers: 1
  num_maskmem: 7
  image_size: 1024
  sigmoid_scale_for_mem_enc: 20.0
  sigmoid_bias_for_mem_enc: -10.0
  use_mask_input_as_output_without_sam: true
  directly_add_no_mem_embed: true
  no_obj_embed_spatial: true
  use_high_res_features_in_sam: true
  multimask_output_in_sam: true
  iou_prediction_use_sigmoid: True
  use_obj_ptrs_in_encoder: true
  add_tpos_enc_to_obj_ptrs: true
  proj_tpos_enc_in_obj_ptrs: true
  use_signed_tpos_enc_to_obj_ptrs: true
  only_obj_ptrs_in_the_past_for_eval: true
  pred_obj_scores: true
  pred_obj_scores_mlp: true
  fixed_no_obj_ptr: true
  multimask_output_for_tracking: true
  use_multimask_token_for_obj_ptr: true
  multimask_min_pt_num: 0
  multimask_max_pt_num: 1
  use_mlp_for_obj_ptr_proj: true
  compile_image_encoder: False
"""

MEDSAM2_LIKE_OVERRIDES = (
    "++model.image_size=512",
    "++model.memory_attention.layer.self_attention.feat_sizes=[32,32]",
    "++model.memory_attention.layer.cross_attention.feat_sizes=[32,32]",
)
"""What MedSAM2's ``sam2.1_hiera_t512.yaml`` changes in SAM 2.1 tiny: a 512 input (its
RoPE grids 32 x 32)."""


def write_tiny_sam2(folder: Path, *, seed: int = 0) -> tuple[Path, Path]:
    """``(config, checkpoint)``: the tiny config file and random weights in the official
    layout ``{"model": state_dict}`` (built by the package's ``build_sam2``)."""
    import torch

    from medsegflow.promptable.sam2_model import build_sam2_network

    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "sam2.1_hiera_tiny_test.yaml"
    config.write_text(TINY_SAM2_YAML, encoding="utf-8")
    torch.manual_seed(seed)
    net = build_sam2_network(str(config), None, device="cpu")
    with torch.no_grad():  # random weights that give masks: spread logits, an object seen
        for mlp in net.sam_mask_decoder.output_hypernetworks_mlps:
            mlp.layers[2].bias.copy_(torch.tensor([2.0, -2.0, 2.0, -2.0]))
        net.sam_mask_decoder.pred_obj_score_head.layers[2].bias.fill_(5.0)
    checkpoint = folder / "sam2.1_hiera_tiny_test.pt"
    torch.save({"model": net.state_dict()}, checkpoint)
    return config, checkpoint
