/**
 * `_component_` builders of src/rlhf (preference losses), registered with
 * src/config/registry.ts. Imported (for its side effect) by src/components.ts.
 */
import { registerComponent } from "../config/registry.ts";
import { type PreferenceLoss, validatePreferenceLoss } from "./preference_loss.ts";

registerComponent<PreferenceLoss>({
  name: "torchtune.rlhf.loss.DPOLoss",
  aliases: ["torchtune.modules.rlhf.loss.DPOLoss", "torchtune.modules.loss.DPOLoss", "DPOLoss"],
  kind: "preference_loss",
  doc: "Direct Preference Optimization: -log sigmoid(beta * (policy - reference log-ratio))",
  params: {
    beta: { type: "float", default: 0.1, doc: "temperature, typically 0.1 to 0.5" },
    label_smoothing: {
      type: "float",
      default: 0,
      doc: "probability that a preference label is flipped (conservative DPO)",
    },
  },
  build: (args) =>
    validatePreferenceLoss({
      kind: "dpo",
      beta: args.beta as number,
      labelSmoothing: args.label_smoothing as number,
    }),
});

registerComponent<PreferenceLoss>({
  name: "torchtune.rlhf.loss.RSOLoss",
  aliases: ["torchtune.modules.rlhf.loss.RSOLoss", "torchtune.modules.loss.RSOLoss", "RSOLoss"],
  kind: "preference_loss",
  doc: "RSO / hinge loss: relu(1 - gamma * (policy - reference log-ratio))",
  params: { gamma: { type: "float", default: 0.1, doc: "temperature, as DPO's beta" } },
  build: (args) => validatePreferenceLoss({ kind: "rso", gamma: args.gamma as number }),
});

registerComponent<PreferenceLoss>({
  name: "torchtune.rlhf.loss.SimPOLoss",
  aliases: [
    "torchtune.modules.rlhf.loss.SimPOLoss",
    "torchtune.modules.loss.SimPOLoss",
    "SimPOLoss",
  ],
  kind: "preference_loss",
  doc: "SimPO: length-averaged log-probabilities with a target margin, no reference model",
  params: {
    beta: { type: "float", default: 2.0, doc: "temperature, typically 2.0 to 2.5" },
    gamma: { type: "float", default: 0.5, doc: "target reward margin" },
    label_smoothing: { type: "float", default: 0, doc: "as DPO's" },
  },
  build: (args) =>
    validatePreferenceLoss({
      kind: "simpo",
      beta: args.beta as number,
      gamma: args.gamma as number,
      labelSmoothing: args.label_smoothing as number,
    }),
});
