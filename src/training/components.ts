/**
 * `_component_` builders of src/training, registered with src/config/registry.ts.
 * Imported (for its side effect) by src/components.ts.
 */
export {};
