/**
 * The Hugging Face Hub client: one place that reads HF_ENDPOINT / HF_TOKEN / the cache dir
 * (`settings.ts`), one request with retries and one-line errors (`http.ts`), model
 * repositories for `tune download` (`models.ts`, `download_command.ts`) and dataset splits
 * for `dataset.source: owner/name` (`datasets.ts`).
 */
export { type HubOptions, hubOptionsFromEnv, resolveToken } from "./settings.ts";
export {
  downloadHubDataset,
  type HubDataFiles,
  type HubDataFormat,
  isRepoId,
  selectDataFiles,
} from "./datasets.ts";
export { type DownloadOptions, downloadRepo, listRepoFiles, type RepoFile } from "./models.ts";
export { downloadCommand, parseDownloadArgs } from "./download_command.ts";
