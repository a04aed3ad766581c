/**
 * Chat formats against torchtune, one test per difference found in issue 18. torchtune's
 * output is written out step by step from its source (torchtune main, read with the search
 * tool's fetch): models/qwen2_5/_tokenizer.py (tokenize_messages, _tokenize_header/_footer),
 * models/qwen2/_tokenizer.py, models/llama3/_tokenizer.py, data/_messages.py
 * (validate_messages), data/_prompt_templates.py (ChatMLTemplate),
 * models/mistral/_prompt_template.py and modules/transforms/tokenizers/_utils.py
 * (tokenize_messages_no_special_tokens). The byte tokenizer encodes text byte by byte (no
 * dummy prefix), so encoding pieces separately (torchtune) or joined (tune) gives the same ids.
 * Tolerance: exact ids, masks and labels.
 */
import { deepStrictEqual, throws } from "node:assert";
import {
  IGNORE_INDEX,
  type Message,
  openAiToMessages,
  sampleFromMask,
  textMessage,
  tokenizeMessages,
  validateMessages,
} from "../src/data/mod.ts";
import { parsePromptTemplate } from "../src/data/prompt_template.ts";
import { TuneError } from "../src/errors.ts";
import { loadTokenizer } from "../src/tokenizers/mod.ts";
import { ByteTokenizer, LLAMA3_SPECIALS } from "./data_byte_tokenizer_test.ts";

const ctx = { source: "test", index: 0 };
const QWEN25 = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool_call>", "</tool_call>"];

/** system, user, assistant tool call, tool result, assistant: torchtune's default masking. */
function toolConversation(): Message[] {
  return [
    { ...textMessage("system", "Be brief."), masked: true },
    { ...textMessage("user", "Weather?"), masked: true },
    { ...textMessage("assistant", '{"name": "w"}', { eot: false, ipython: true }) },
    { ...textMessage("ipython", "sunny", { eot: false }), masked: true },
    textMessage("assistant", "Sunny."),
  ];
}

const oneLine = (re: RegExp) => (e: unknown) =>
  e instanceof TuneError && !e.message.includes("\n") && re.test(e.message);

Deno.test("chatml (Qwen2.5): tool call in <tool_call>, result as a user <tool_response>, EOS <|im_end|>", () => {
  const tok = new ByteTokenizer({ specials: QWEN25, eos: "<|im_end|>", noBos: true });
  const e = (s: string) => tok.encode(s, { bos: false });
  const sp = (s: string) => tok.specialTokens.get(s)!;
  const [start, end] = [sp("<|im_start|>"), sp("<|im_end|>")];
  // torchtune Qwen2_5Tokenizer.tokenize_messages, message by message:
  const sys = [start, ...e("system\n"), ...e("Be brief."), end, ...e("\n")];
  const user = [start, ...e("user\n"), ...e("Weather?"), end, ...e("\n")];
  // assistant + ipython: header adds <tool_call> + "\n", footer "\n" + </tool_call>, then end
  const call = [
    start,
    ...e("assistant\n"),
    sp("<tool_call>"),
    ...e("\n"),
    ...e('{"name": "w"}'),
    ...e("\n"),
    sp("</tool_call>"),
    end,
    ...e("\n"),
  ];
  // first ipython message: "user" header + "<tool_response>\n"; last: "\n</tool_response>" + end
  const result = [
    start,
    ...e("user\n"),
    ...e("<tool_response>\n"),
    ...e("sunny"),
    ...e("\n</tool_response>"),
    end,
    ...e("\n"),
  ];
  // last assistant message: no footer; then eos_id (<|im_end|>) with mask[-1]
  const answer = [start, ...e("assistant\n"), ...e("Sunny.")];
  const { tokens, mask } = tokenizeMessages(tok, toolConversation(), "chatml");
  deepStrictEqual(tokens, [...sys, ...user, ...call, ...result, ...answer, end]);
  const m = (ids: number[], v: boolean) => ids.map(() => v);
  deepStrictEqual(mask, [
    ...m(sys, true),
    ...m(user, true),
    ...m(call, false),
    ...m(result, true),
    ...m(answer, false),
    false,
  ]);
  // labels: shifted; the model learns the tool call, the answer and the closing <|im_end|>
  const { labels } = sampleFromMask(tokens, mask);
  const trained = Array.from(labels).filter((l) => l !== IGNORE_INDEX);
  deepStrictEqual(trained, [...call, ...answer, end]);
});

Deno.test("chatml (Qwen2): no tool tokens, so ipython messages are written bare", () => {
  const tok = new ByteTokenizer({
    specials: ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
    eos: "<|im_end|>",
    noBos: true,
  });
  const e = (s: string) => tok.encode(s, { bos: false });
  const [start, end] = [
    tok.specialTokens.get("<|im_start|>")!,
    tok.specialTokens.get("<|im_end|>")!,
  ];
  const msgs = [
    { ...textMessage("user", "Q"), masked: true },
    { ...textMessage("assistant", "c", { eot: false, ipython: true }) },
    { ...textMessage("ipython", "r", { eot: false }), masked: true },
    textMessage("assistant", "A"),
  ];
  // Qwen2Tokenizer: ipython has no header/footer; the last assistant no footer; eos <|im_end|>
  deepStrictEqual(tokenizeMessages(tok, msgs, "chatml").tokens, [
    start,
    ...e("user\n"),
    ...e("Q"),
    end,
    ...e("\n"),
    start,
    ...e("assistant\n"),
    ...e("c"),
    end,
    ...e("\n"),
    ...e("r"),
    start,
    ...e("assistant\n"),
    ...e("A"),
    end,
  ]);
});

Deno.test("llama3: tool call with <|python_tag|> and <|eom_id|>, tool result as ipython; BOS/EOS masked", () => {
  const tok = new ByteTokenizer({ specials: LLAMA3_SPECIALS });
  const e = (s: string) => tok.encode(s, { bos: false });
  const sp = (s: string) => tok.specialTokens.get(s)!;
  const header = (
    role: string,
  ) => [sp("<|start_header_id|>"), ...e(role), sp("<|end_header_id|>"), ...e("\n\n")];
  // Llama3Tokenizer.tokenize_message: header + stripped text (+ python_tag first) + eot/eom
  const parts: [number[], boolean][] = [
    [[...header("system"), ...e("Be brief."), sp("<|eot_id|>")], true],
    [[...header("user"), ...e("Weather?"), sp("<|eot_id|>")], true],
    [
      [...header("assistant"), sp("<|python_tag|>"), ...e('{"name": "w"}'), sp("<|eom_id|>")],
      false,
    ],
    [[...header("ipython"), ...e("sunny"), sp("<|eom_id|>")], true],
    [[...header("assistant"), ...e("Sunny."), sp("<|eot_id|>")], false],
  ];
  const { tokens, mask } = tokenizeMessages(tok, toolConversation(), "llama3");
  deepStrictEqual(tokens, [tok.bosId, ...parts.flatMap(([ids]) => ids), tok.eosId]);
  deepStrictEqual(mask, [true, ...parts.flatMap(([ids, v]) => ids.map(() => v)), true]);
});

Deno.test("validateMessages() refuses a tool message after an assistant message that called no tool", () => {
  const msgs = [
    textMessage("user", "Q"),
    textMessage("assistant", "no call here", { eot: false }),
    textMessage("tool", "r", { eot: false }),
  ];
  throws(() => validateMessages(msgs, ctx), oneLine(/tool message 2 does not follow a tool call/));
  validateMessages(toolConversation(), ctx); // the well-formed one passes
  throws(
    () =>
      validateMessages(
        [textMessage("user", "Q", { ipython: true }), textMessage("assistant", "A")],
        ctx,
      ),
    oneLine(/only assistant messages call tools/),
  );
  // OpenAI rows: an assistant message with tool_calls becomes the tool call
  const msgsOpenAi = openAiToMessages(
    {
      messages: [
        { role: "user", content: "Weather?" },
        {
          role: "assistant",
          content: null,
          tool_calls: [{
            type: "function",
            function: { name: "w", arguments: '{"city": "Paris"}' },
          }],
        },
        { role: "tool", content: "sunny" },
        { role: "assistant", content: "Sunny." },
      ],
    },
    ctx,
    { trainOnInput: false },
  );
  validateMessages(msgsOpenAi, ctx);
  deepStrictEqual(msgsOpenAi[1].content, ['{"name": "w", "arguments": {"city": "Paris"}}']);
  deepStrictEqual([msgsOpenAi[1].ipython, msgsOpenAi[1].eot], [true, false]);
});

Deno.test("ChatMLTemplate is text tags usable with any tokenizer; the last turn ends <|im_end|>\\n", () => {
  // a tokenizer without <|im_start|> (e.g. Llama 2): torchtune's ChatMLTemplate adds text
  // tags, then tokenize_messages_no_special_tokens adds BOS per turn and EOS after answers
  const tok = Object.assign(new ByteTokenizer(), {
    promptTemplate: parsePromptTemplate("torchtune.data.ChatMLTemplate", "t"),
  });
  const e = (s: string) => tok.encode(s, { bos: false });
  const msgs = [
    { ...textMessage("system", "S"), masked: true },
    { ...textMessage("user", "U"), masked: true },
    textMessage("assistant", "A"),
  ];
  const { tokens, mask } = tokenizeMessages(tok, msgs, "none");
  const prompt = e("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n");
  const answer = e("<|im_start|>assistant\nA<|im_end|>\n");
  deepStrictEqual(tokens, [tok.bosId, ...prompt, ...answer, tok.eosId]);
  deepStrictEqual(mask, [true, ...prompt.map(() => true), ...answer.map(() => false), false]);
  // an empty last assistant message gets only its opening tag (a generation prompt)
  const open = tokenizeMessages(tok, [msgs[1], textMessage("assistant", "")], "none", {
    addEnd: false,
  });
  deepStrictEqual(open.tokens, [
    tok.bosId,
    ...e("<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"),
  ]);
});

Deno.test("ChatMLTemplate on a tokenizer with ChatML special tokens and the chatml format is refused", () => {
  // torchtune's Qwen2 tokenizers assert the prompt template is not ChatMLTemplate
  const tok = Object.assign(
    new ByteTokenizer({ specials: QWEN25, eos: "<|im_end|>", noBos: true }),
    { promptTemplate: parsePromptTemplate("torchtune.data.ChatMLTemplate", "t") },
  );
  throws(
    () =>
      tokenizeMessages(tok, [textMessage("user", "U"), textMessage("assistant", "A")], "chatml"),
    oneLine(/ChatMLTemplate with the chatml chat format would wrap each message/),
  );
});

Deno.test("MistralChatTemplate wraps user turns in [INST] and refuses system prompts", () => {
  const tok = new ByteTokenizer();
  const e = (s: string) => tok.encode(s, { bos: false });
  const msgs = [
    { ...textMessage("user", "Hi"), masked: true },
    textMessage("assistant", "Yo"),
    { ...textMessage("user", "Again"), masked: true },
    textMessage("assistant", "Sure"),
  ];
  // tags user ("[INST] ", " [/INST] ") as torchtune's MistralChatTemplate. One documented
  // difference (src/data/chat_format.ts): tune joins a message's pieces and strips trailing
  // spaces only for SentencePiece tokenizers, so the text is Mistral's "[INST] Hi [/INST] Yo";
  // torchtune encodes "[INST]", "Hi", " [/INST]" (each rstripped) separately.
  const { tokens } = tokenizeMessages(tok, msgs, "mistral");
  deepStrictEqual(tokens, [
    tok.bosId,
    ...e("[INST] Hi [/INST] "),
    ...e("Yo"),
    tok.eosId,
    tok.bosId,
    ...e("[INST] Again [/INST] "),
    ...e("Sure"),
    tok.eosId,
  ]);
  throws(
    () => tokenizeMessages(tok, [textMessage("system", "S"), ...msgs], "mistral"),
    oneLine(/has no system messages/),
  );
});

Deno.test("none (Llama 2 / Mistral / Gemma without a template): the tool conversation on Llama 2's real tokenizer", () => {
  // torchtune's tokenize_messages_no_special_tokens (Llama2Tokenizer, MistralTokenizer and
  // GemmaTokenizer without prompt_template): BOS when a turn starts; text.rstrip(" "), encoded
  // with trim_leading_whitespace (encode("\n" + text) minus encode("\n")) when the message
  // continues a turn; EOS after every assistant message, which ends the turn
  const tok = loadTokenizer(
    new URL("./data/tokenizers/llama2/tokenizer.model", import.meta.url).pathname,
  );
  const e = (s: string) => tok.encode(s, { bos: false });
  const cont = (s: string) => e("\n" + s).slice(e("\n").length);
  const [bos, eos] = [tok.bosId, tok.eosId];
  const parts: [number[], boolean][] = [
    [[bos, ...e("Be brief.")], true], // system starts the turn
    [cont("Weather?"), true], // user continues it
    [[...cont('{"name": "w"}'), eos], false], // the tool call is an assistant message: EOS
    [[bos, ...e("sunny")], true], // a new turn starts with the tool result
    [[...cont("Sunny."), eos], false],
  ];
  const { tokens, mask } = tokenizeMessages(tok, toolConversation(), "none");
  deepStrictEqual(tokens, parts.flatMap(([ids]) => ids));
  deepStrictEqual(mask, parts.flatMap(([ids, v]) => ids.map(() => v)));
  const { labels } = sampleFromMask(tokens, mask);
  deepStrictEqual(
    Array.from(labels).filter((l) => l !== IGNORE_INDEX),
    [...parts[2][0], ...parts[4][0]],
  );
});

Deno.test("phi3 refuses tool messages, as torchtune's Phi3MiniTokenizer raises for unknown roles", () => {
  const tok = new ByteTokenizer({
    specials: ["<|user|>", "<|assistant|>", "<|system|>", "<|end|>"],
  });
  throws(
    () => tokenizeMessages(tok, toolConversation(), "phi3"),
    oneLine(/phi3 has no role ipython/),
  );
});
