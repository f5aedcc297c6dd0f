// Per-process CPU time and memory from /proc: what the kernel charged, not wall time.
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

let ticksPerSecond: number | undefined;
function clockTicks(): number {
  ticksPerSecond ??= Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  return ticksPerSecond;
}

/** utime + stime of the whole process (all its threads), in µs; 0 when it is gone. */
export function cpuMicros(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may contain spaces and parentheses: count from the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(fields[11]) + Number(fields[12]); // fields 14 and 15: utime, stime
    return (ticks * 1e6) / clockTicks();
  } catch {
    return 0;
  }
}

export function rssBytes(pid: number): number {
  try {
    const match = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match ? Number(match[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

export function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** The soft RLIMIT_NOFILE of a process, from /proc/<pid>/limits. */
export function openFilesLimit(pid: number | 'self'): number {
  try {
    const match = /^Max open files\s+(\d+|unlimited)\s+(\d+|unlimited)/m.exec(readFileSync(`/proc/${pid}/limits`, 'utf8'));
    if (!match) return 0;
    return match[1] === 'unlimited' ? Number.POSITIVE_INFINITY : Number(match[1]);
  } catch {
    return 0;
  }
}

export function hardOpenFilesLimit(): number {
  const match = /^Max open files\s+\S+\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
  if (!match) return 0;
  return match[1] === 'unlimited' ? Number.POSITIVE_INFINITY : Number(match[1]);
}

/** Groups of processes whose CPU is reported together (nginx: master + workers). */
export type PidGroups = Record<string, () => number[]>;

export type CpuSample = Record<string, number>;

export function sampleCpu(groups: PidGroups): CpuSample {
  const out: CpuSample = {};
  for (const [name, pids] of Object.entries(groups)) out[name] = pids().reduce((sum, pid) => sum + cpuMicros(pid), 0);
  return out;
}

export function cpuDelta(before: CpuSample, after: CpuSample): CpuSample {
  const out: CpuSample = {};
  for (const name of Object.keys(after)) out[name] = (after[name] ?? 0) - (before[name] ?? 0);
  return out;
}

export interface Machine {
  cores: number;
  model: string;
  memGiB: number;
  node: string;
  kernel: string;
  nginx: string;
  mosquitto: string;
  redis: string;
}

export function machine(): Machine {
  const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
  const meminfo = readFileSync('/proc/meminfo', 'utf8');
  // Both print their version on stderr; `mosquitto -h` also exits non-zero.
  const version = (cmd: string, args: string[], pattern: RegExp) => {
    const out = spawnSync(cmd, args, { encoding: 'utf8' });
    return pattern.exec(`${out.stdout ?? ''}${out.stderr ?? ''}`)?.[1] ?? '?';
  };
  return {
    cores: cpuinfo.split('\n').filter((l) => l.startsWith('processor')).length,
    model: /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? '?',
    memGiB: Math.round((Number(/^MemTotal:\s+(\d+)/m.exec(meminfo)?.[1] ?? 0) / 1024 / 1024) * 10) / 10,
    node: process.version,
    kernel: readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim(),
    nginx: version('/usr/sbin/nginx', ['-v'], /nginx\/(\S+)/),
    mosquitto: version('/usr/sbin/mosquitto', ['-h'], /mosquitto version (\S+)/),
    redis: version('/usr/bin/redis-server', ['--version'], /v=(\S+)/),
  };
}
