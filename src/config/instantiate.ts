/** Building a component from a resolved `_component_` section (torchtune's `config.instantiate`). */
import { TuneError } from "../errors.ts";
import { findComponent } from "./registry.ts";
import type { ComponentSection } from "./schema.ts";

/**
 * Build the component a resolved section names, passing its arguments plus `extra`
 * (run-time arguments such as the model's parameters; `extra` wins on a clash).
 * The section must come from a resolved config, so its arguments are already checked.
 */
export function instantiate<T>(
  section: ComponentSection,
  extra: Record<string, unknown> = {},
): T {
  const spec = findComponent(section._component_);
  if (!spec) throw new TuneError(`unknown _component_ '${section._component_}'`);
  const { _component_: _, ...args } = section;
  return spec.build({ ...args, ...extra }) as T;
}
