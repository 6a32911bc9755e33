// Which patches the MIM student sees masked. BEiT block-wise masking (what EVA-02/asuka, and so
// EVA-X, uses) or uniform random masking; EVA-X masks 30% of the 14×14 grid.
#pragma once

#include <torch/torch.h>

#include <string>

#include "evax/core/config.h"
#include "evax/core/rng.h"

namespace evax {

enum class MaskKind {
  kBlock,    ///< BEiT block-wise rectangles until the patch budget is reached
  kUniform,  ///< exactly round(ratio · N) patches chosen uniformly
};

/// Masking of a grid of patches.
struct MaskingOptions {
  /// Grid height and width in patches (224/16 = 14).
  TORCH_ARG(int64_t, grid) = 14;
  /// Fraction of patches to mask (EVA-X: 0.3).
  TORCH_ARG(double, ratio) = 0.3;
  /// Block or uniform masking.
  TORCH_ARG(MaskKind, kind) = MaskKind::kBlock;
  /// Smallest block in patches (asuka: 16).
  TORCH_ARG(int64_t, min_block) = 16;
  /// Largest block in patches (0: the whole budget).
  TORCH_ARG(int64_t, max_block) = 0;
  /// Aspect ratio range of blocks is [min_aspect, 1/min_aspect], drawn log-uniformly.
  TORCH_ARG(double, min_aspect) = 0.3;

 public:
  /// Patches to mask: round(ratio · grid²) (59 at 14×14, 0.3).
  int64_t num_masked() const;
};

/// Reads `masking:` (grid, ratio, kind: block|uniform, min_block, max_block, min_aspect).
MaskingOptions masking_options_from_config(const ConfigView& v, MaskingOptions defaults = {});

/// One (grid, grid) bool mask, row-major like the patch tokens. Block masking may fall a few patches
/// short of the budget (as in BEiT) when a round adds nothing; uniform masking is exact.
torch::Tensor mask_generate(const MaskingOptions& o, Rng& rng);

/// One BEiT round: tries up to 10 rectangles and masks the first one that adds between 1 and
/// `max_mask` new patches. Returns the number added. Exposed for step-by-step tests.
int64_t mask_block_round(const MaskingOptions& o, Rng& rng, int64_t max_mask, uint8_t* mask);

}  // namespace evax
