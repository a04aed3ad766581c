/**
 * The explicit `_component_` registry: a config can only name builders registered here,
 * never an arbitrary import. Domain modules register their builders in their own
 * `components.ts` (src/models/components.ts, src/data/components.ts, ...), and
 * src/components.ts imports every one of them.
 */
import type { ComponentKind, ComponentSpec } from "./schema.ts";

const byName = new Map<string, ComponentSpec>();

/** Register a builder under its name and aliases. Registering a name twice is a bug. */
export function registerComponent<T>(spec: ComponentSpec<T>): ComponentSpec<T> {
  for (const name of [spec.name, ...(spec.aliases ?? [])]) {
    if (byName.has(name)) throw new Error(`component ${name} registered twice`);
    byName.set(name, spec as ComponentSpec);
  }
  return spec;
}

/** The builder registered under `name` (or alias), or undefined. */
export function findComponent(name: string): ComponentSpec | undefined {
  return byName.get(name);
}

/** Every registered builder of a kind (each once, by canonical name). */
export function componentsOfKind(kind: ComponentKind): ComponentSpec[] {
  const seen = new Set<ComponentSpec>();
  for (const spec of byName.values()) if (spec.kind === kind) seen.add(spec);
  return [...seen].sort((a, b) => a.name.localeCompare(b.name));
}

/** Every registered name and alias (for "did you mean" suggestions). */
export function allComponentNames(): string[] {
  return [...byName.keys()];
}
