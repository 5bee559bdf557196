"""The training core that the splatting and NeRF trainers share.

- `budget`: iterations or minutes of training time, one meaning everywhere (`Budget`);
- `config`: the settings every trainer has, under the same names (`TrainingConfig`), and their checks;
- `trainer`: the loop (`Trainer`: clock, history, periodic / final / Ctrl-C checkpoints, resume at the exact
  step, progress bar, outputs), `TrainResult` and the end-of-run summary, early checks of the data set;
- `checkpoint`: versioned checkpoints written atomically and read with the weights-only unpickler;
- `history`: `history.json` and `training_curve.svg` (drawn through `mapforge.report.svg`);
- `evaluation`: the evaluation loop over a split, the render-naming rule and the empty-split result;
- `bounds`: the scene's scale and the box the cameras look at.
"""
