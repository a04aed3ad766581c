/**
 * `_component_` builders of src/models, registered with src/config/registry.ts.
 * Imported (for its side effect) by src/components.ts.
 */
export {};
