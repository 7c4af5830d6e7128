import { describe, expect, it } from 'vitest';
import {
  EM_386,
  EM_AARCH64,
  EM_ARM,
  EM_LOONGARCH,
  EM_MIPS,
  EM_PPC64,
  EM_RISCV,
  EM_S390,
  EM_X86_64,
  elfMatches,
  expectedElf,
  parseElfHeader,
} from '../../src/oci/elf.js';

/** The first 64 bytes of an ELF file with the given identity. */
function elfHead(machine: number, elfClass: 32 | 64, endianness: 'little' | 'big'): Buffer {
  const head = Buffer.alloc(64);
  head.set([0x7f, 0x45, 0x4c, 0x46, elfClass === 32 ? 1 : 2, endianness === 'little' ? 1 : 2, 1]);
  if (endianness === 'little') {
    head.writeUInt16LE(2, 16); // ET_EXEC
    head.writeUInt16LE(machine, 18);
  } else {
    head.writeUInt16BE(2, 16);
    head.writeUInt16BE(machine, 18);
  }
  return head;
}

describe('parseElfHeader', () => {
  it.each([
    [EM_X86_64, 64, 'little', 'x86-64 ELF'],
    [EM_AARCH64, 64, 'little', 'ARM aarch64 ELF'],
    [EM_ARM, 32, 'little', 'ARM ELF (32-bit)'],
    [EM_PPC64, 64, 'little', 'PowerPC64 little-endian ELF'],
    [EM_PPC64, 64, 'big', 'PowerPC64 big-endian ELF'],
    [EM_S390, 64, 'big', 'IBM S/390 ELF (64-bit)'],
    [EM_386, 32, 'little', 'Intel 80386 ELF'],
    [EM_RISCV, 64, 'little', 'RISC-V ELF (64-bit)'],
    [EM_MIPS, 64, 'little', 'MIPS little-endian ELF (64-bit)'],
    [EM_MIPS, 32, 'big', 'MIPS big-endian ELF (32-bit)'],
    [EM_LOONGARCH, 64, 'little', 'LoongArch ELF'],
    [EM_X86_64, 32, 'little', 'x86-64 ELF (32-bit)'],
    [EM_AARCH64, 64, 'big', 'ARM aarch64 big-endian ELF'],
  ] as const)('describes machine %i, %i-bit %s-endian as "%s"', (machine, bits, order, text) => {
    expect(parseElfHeader(elfHead(machine, bits, order))).toMatchObject({
      machine,
      class: bits,
      endianness: order,
      description: text,
    });
  });

  it('reads the machine in the byte order the header declares', () => {
    // 0x0016 big-endian is S/390; read little-endian it would be 0x1600.
    expect(parseElfHeader(elfHead(EM_S390, 64, 'big'))?.machineName).toBe('IBM S/390');
  });

  it('needs only the first 20 bytes', () => {
    expect(parseElfHeader(elfHead(EM_AARCH64, 64, 'little').subarray(0, 20))?.machineName).toBe(
      'ARM aarch64',
    );
  });

  it('names a machine it does not know by its number', () => {
    expect(parseElfHeader(elfHead(0x1234, 64, 'little'))?.description).toBe(
      'unknown machine 4660 little-endian ELF (64-bit)',
    );
  });

  it.each([
    ['a shell script', Buffer.from('#!/bin/sh\necho hello world, this is long enough\n')],
    ['a truncated header', elfHead(EM_X86_64, 64, 'little').subarray(0, 19)],
    ['an invalid class', Buffer.from(elfHead(EM_X86_64, 64, 'little')).fill(3, 4, 5)],
    ['an invalid byte order', Buffer.from(elfHead(EM_X86_64, 64, 'little')).fill(0, 5, 6)],
    ['nothing', Buffer.alloc(0)],
  ])('says %s is not ELF', (_what, bytes) => {
    expect(parseElfHeader(bytes)).toBeUndefined();
  });
});

describe('expectedElf', () => {
  it.each([
    ['amd64', undefined, EM_X86_64, 64, 'little'],
    ['386', undefined, EM_386, 32, 'little'],
    ['arm', 'v7', EM_ARM, 32, 'little'],
    ['arm', 'v6', EM_ARM, 32, 'little'],
    ['arm64', 'v8', EM_AARCH64, 64, 'little'],
    ['ppc64le', undefined, EM_PPC64, 64, 'little'],
    ['ppc64', undefined, EM_PPC64, 64, 'big'],
    ['s390x', undefined, EM_S390, 64, 'big'],
    ['riscv64', undefined, EM_RISCV, 64, 'little'],
    ['mips64le', undefined, EM_MIPS, 64, 'little'],
    ['loong64', undefined, EM_LOONGARCH, 64, 'little'],
  ] as const)(
    'expects linux/%s (%s) binaries for machine %i, %i-bit, %s-endian',
    (architecture, variant, machine, bits, order) => {
      expect(expectedElf({ os: 'linux', architecture, variant })).toEqual({
        machine,
        class: bits,
        endianness: order,
      });
    },
  );

  it.each([
    { os: 'windows', architecture: 'amd64' },
    { os: 'wasip1', architecture: 'wasm' },
    { os: 'linux', architecture: 'sparc64' },
  ])('has no expectation for $os/$architecture', (platform) => {
    expect(expectedElf(platform)).toBeUndefined();
  });
});

describe('elfMatches', () => {
  const arm64 = expectedElf({ os: 'linux', architecture: 'arm64' })!;
  const ppc64le = expectedElf({ os: 'linux', architecture: 'ppc64le' })!;

  it('accepts a binary of the expected machine, class and byte order', () => {
    expect(elfMatches(parseElfHeader(elfHead(EM_AARCH64, 64, 'little'))!, arm64)).toBe(true);
  });

  it('rejects another machine', () => {
    expect(elfMatches(parseElfHeader(elfHead(EM_X86_64, 64, 'little'))!, arm64)).toBe(false);
  });

  it('rejects a big-endian PowerPC64 binary on ppc64le', () => {
    expect(elfMatches(parseElfHeader(elfHead(EM_PPC64, 64, 'big'))!, ppc64le)).toBe(false);
  });

  it('rejects a 32-bit ARM binary on arm64', () => {
    expect(elfMatches(parseElfHeader(elfHead(EM_ARM, 32, 'little'))!, arm64)).toBe(false);
  });
});
