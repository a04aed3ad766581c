/**
 * Every `_component_` builder tune knows, registered by importing each domain's
 * components file. This list is the whole registry: configs cannot name anything else.
 */
import "./models/components.ts";
import "./models/builders/qlora.ts";
import "./tokenizers/components.ts";
import "./checkpoint/components.ts";
import "./export/components.ts";
import "./data/components.ts";
import "./optim/components.ts";
import "./optim/bnb_components.ts";
import "./training/components.ts";
import "./training/profiler.ts";
import "./rlhf/components.ts";
import "./rlhf/grpo_components.ts";
