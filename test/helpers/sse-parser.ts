// A parser that follows the WHATWG "server-sent events" interpretation rules to the letter, so
// tests check our bytes against what a browser would make of them.

export interface ParsedEvent {
  type: string;
  data: string;
  lastEventId: string;
}

export class SseParser {
  events: ParsedEvent[] = [];
  comments: string[] = [];
  retry: number | undefined;
  lastEventId = '';
  private buffer = '';
  private data = '';
  private type = '';
  private sawCR = false;
  private first = true;

  push(chunk: string): ParsedEvent[] {
    let text = chunk;
    if (this.first && text.length > 0) {
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
      this.first = false;
    }
    const out: ParsedEvent[] = [];
    for (const ch of text) {
      if (this.sawCR) {
        this.sawCR = false;
        if (ch === '\n') continue; // CRLF: the CR already ended the line
      }
      if (ch === '\r' || ch === '\n') {
        if (ch === '\r') this.sawCR = true;
        const event = this.line(this.buffer);
        this.buffer = '';
        if (event) out.push(event);
      } else {
        this.buffer += ch;
      }
    }
    this.events.push(...out);
    return out;
  }

  private line(line: string): ParsedEvent | undefined {
    if (line === '') return this.dispatch();
    if (line.startsWith(':')) {
      this.comments.push(line.slice(1));
      return undefined;
    }
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    switch (field) {
      case 'event':
        this.type = value;
        break;
      case 'data':
        this.data += `${value}\n`;
        break;
      case 'id':
        if (!value.includes('\0')) this.lastEventId = value;
        break;
      case 'retry':
        if (/^[0-9]+$/.test(value)) this.retry = Number(value);
        break;
      default:
        break; // unknown fields are ignored
    }
    return undefined;
  }

  private dispatch(): ParsedEvent | undefined {
    if (this.data === '') {
      this.type = '';
      return undefined;
    }
    const event = { type: this.type || 'message', data: this.data.slice(0, -1), lastEventId: this.lastEventId };
    this.data = '';
    this.type = '';
    return event;
  }
}

export function parseAll(text: string): SseParser {
  const parser = new SseParser();
  parser.push(text);
  return parser;
}
