/**
 * torchtune's prompt templates on the tokenizer (`tokenizer.prompt_template`), token by token
 * with the byte tokenizer (BOS 1, EOS 2, byte b -> b + 3). The tags come from
 * torchtune/data/_prompt_templates.py: each is a separate text piece around the message, masked
 * with it (user tags masked, assistant tags trained). Tolerance: exact.
 */
import { deepStrictEqual, equal, throws } from "node:assert";
import "../src/components.ts";
import { instantiate } from "../src/config/instantiate.ts";
import { resolveComponent } from "../src/config/resolve.ts";
import { maskMessages, resolveChatFormat, textMessage, tokenizeMessages } from "../src/data/mod.ts";
import { parsePromptTemplate } from "../src/data/prompt_template.ts";
import { TuneError } from "../src/errors.ts";
import type { Tokenizer } from "../src/tokenizers/types.ts";
import { ByteTokenizer } from "./data_byte_tokenizer_test.ts";

const bytes = (s: string) => [...new TextEncoder().encode(s)].map((b) => b + 3);

/** The byte tokenizer carrying a template, as the tokenizer component sets it. */
function withTemplate(value: unknown): Tokenizer {
  const tok = new ByteTokenizer() as ByteTokenizer & { promptTemplate: unknown };
  tok.promptTemplate = parsePromptTemplate(value, "tokenizer.prompt_template");
  return tok as unknown as Tokenizer;
}

function conversation() {
  const m = [textMessage("user", "ab"), textMessage("assistant", "cd")];
  maskMessages(m, "train_on_assistant");
  return m;
}

Deno.test("SummarizeTemplate wraps the user message in its tags, masked with it", () => {
  const tok = withTemplate("torchtune.data.SummarizeTemplate");
  const { tokens, mask } = tokenizeMessages(tok, conversation(), "none");
  const prompt = [
    ...bytes("Summarize this dialogue:\n"),
    ...bytes("ab"),
    ...bytes("\n---\nSummary:\n"),
  ];
  deepStrictEqual(tokens, [1, ...prompt, ...bytes("cd"), 2]);
  deepStrictEqual(mask, [true, ...prompt.map(() => true), false, false, false]);
});

Deno.test("a custom {role: [prepend, append]} template tags user and assistant; assistant tags are trained", () => {
  const tok = withTemplate({ user: ["Q: ", "\n"], assistant: ["A: ", ""] });
  const { tokens, mask } = tokenizeMessages(tok, conversation(), "none");
  const user = [...bytes("Q: "), ...bytes("ab"), ...bytes("\n")];
  const answer = [...bytes("A: "), ...bytes("cd")];
  deepStrictEqual(tokens, [1, ...user, ...answer, 2]);
  deepStrictEqual(mask, [true, ...user.map(() => true), ...answer.map(() => false), false]);
});

Deno.test("Llama2ChatTemplate selects its chat format under chat_format=auto; ChatMLTemplate is text tags", () => {
  // torchtune's ChatMLTemplate is a plain PromptTemplate (text tags), usable with any tokenizer
  equal(resolveChatFormat("auto", withTemplate("torchtune.data.ChatMLTemplate"), "none"), "none");
  equal(
    resolveChatFormat("auto", withTemplate("torchtune.models.llama2.Llama2ChatTemplate"), "none"),
    "llama2",
  );
  // an explicit dataset chat_format still wins
  equal(resolveChatFormat("plain", withTemplate("torchtune.data.ChatMLTemplate"), "none"), "plain");
});

Deno.test("parsePromptTemplate() rejects unknown names and malformed mappings in one line", () => {
  const oneLine = (re: RegExp) => (e: unknown) =>
    e instanceof TuneError && !e.message.includes("\n") && re.test(e.message);
  throws(
    () => parsePromptTemplate("torchtune.data.SumarizeTemplate", "tokenizer.prompt_template"),
    oneLine(/unknown tokenizer.prompt_template .*did you mean 'torchtune.data.SummarizeTemplate'/),
  );
  throws(
    () => parsePromptTemplate({ human: ["a", "b"] }, "tokenizer.prompt_template"),
    oneLine(/tokenizer.prompt_template.human: unknown role/),
  );
  throws(
    () => parsePromptTemplate({ user: ["a"] }, "tokenizer.prompt_template"),
    oneLine(/must be \[prepend, append\]/),
  );
});

Deno.test("the tokenizer component carries prompt_template from a config section", () => {
  const section = resolveComponent(
    "tokenizer",
    {
      _component_: "tune.tokenizers.load",
      path: "tests/fixtures/tokenizer_sp_small.model",
      prompt_template: "torchtune.data.QuestionAnswerTemplate",
    },
    "tokenizer",
    { recipe: "test", prefix: "" },
  );
  const tok = instantiate<Tokenizer>(section);
  deepStrictEqual(tok.promptTemplate?.tags, { user: ["Question: ", "\n\nAnswer: "] });
});
