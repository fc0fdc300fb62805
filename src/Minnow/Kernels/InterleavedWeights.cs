using System.Runtime.CompilerServices;
using Minnow.Tensors;

namespace Minnow.Kernels;

/// <summary>
/// A Q8_0, Q4_0, group-wise INT4 (Q4_1 family) or INT3 (Q3_1 family) weight matrix rearranged once for
/// <see cref="QuantizedMatMul"/>, the way llama.cpp repacks
/// Q4_0 at load: rows go in groups of eight, and for every block of 32 columns a group stores its eight fp16
/// scales side by side (converted together in one vector), for the INT4 and INT3 groups their eight fp16 minimums (a group
/// of 64 or 128 repeats its scale and minimum for each of its 32-value blocks), and then the eight rows' quants interleaved four bytes at a time
/// (the chunks <see cref="IInt8RowsDot"/> reads), so one vector holds a piece of every row and the products land
/// in one lane per row. A last short group is padded with zero rows. Made on a matrix's first use and kept with
/// it (<see cref="For"/>). INT3 codes are unpacked here into the INT4 form (Q4_1 nibbles, the same d and m; codes
/// 0..7 fit in a nibble), so the INT4 kernels run INT3 bit for bit and the interleaved copy takes INT4's memory.
/// When the original bytes are a view of a memory-mapped file, their pages are released as they are copied, so the
/// resident set holds one copy.
/// </summary>
internal sealed unsafe class InterleavedWeights
{
    public const int GroupRows = 8;
    private const int BlockSize = 32;

    private readonly NativeBuffer _buffer;

    private InterleavedWeights(Tensor weight, WorkerPool pool)
    {
        Type = weight.Type;
        Rows = weight.Rows;
        Blocks = weight.Columns / BlockSize;
        Groups = (Rows + GroupRows - 1) / GroupRows;
        BlockStride = HeaderBytes(Type) + QuantBytes(Type);
        GroupStride = Blocks * BlockStride;
        _buffer = new NativeBuffer(Groups * GroupStride);
        var job = new PackJob
        {
            Source = weight.Data,
            SourceRowBytes = weight.RowBytes,
            ReleaseSource = weight.IsMapped,
            Rows = Rows,
            Blocks = Blocks,
            Destination = _buffer.Pointer,
            GroupStride = GroupStride,
            Type = Type,
        };
        pool.For(Groups, Math.Max(1, Groups / (pool.ThreadCount * 4)), &PackGroups, &job);
    }

    public DType Type { get; }

    public int Rows { get; }

    public int Blocks { get; }

    public int Groups { get; }

    /// <summary>Bytes of one group's block: eight fp16 scales, then the quants (as many bytes as the eight original blocks).</summary>
    public long BlockStride { get; }

    public long GroupStride { get; }

    public byte* Data => _buffer.Pointer;

    /// <summary>Bytes of one group's fp16 scales (and, for the INT4 and INT3 formats with a minimum, fp16 minimums) per block.</summary>
    public static int HeaderBytes(DType type) => type.IsIntGroup() ? 2 * GroupRows * sizeof(ushort) : GroupRows * sizeof(ushort);

    /// <summary>Bytes of one group's interleaved quants per block: 256 for Q8_0, 128 for the 4-bit formats and INT3 (as nibbles).</summary>
    public static int QuantBytes(DType type) => type == DType.Q8_0 ? GroupRows * BlockSize : GroupRows * BlockSize / 2;

    /// <summary>The interleaved form of <paramref name="weight"/>, made (with <paramref name="pool"/>) on first use.</summary>
    public static InterleavedWeights For(Tensor weight, WorkerPool pool) =>
        weight.KernelForm(pool, static (w, pool) => new InterleavedWeights(w, pool));

    private struct PackJob
    {
        public byte* Source;
        public long SourceRowBytes;
        public bool ReleaseSource;
        public int Rows;
        public int Blocks;
        public byte* Destination;
        public long GroupStride;
        public DType Type;
    }

    private static void PackGroups(void* context, int start, int end)
    {
        ref PackJob job = ref *(PackJob*)context;
        bool q8 = job.Type == DType.Q8_0;
        bool minimum = job.Type.IsIntGroup();
        bool int3 = job.Type.IsInt3Group();
        int codeBytes = minimum ? GroupCodes.BytesPerBlock(job.Type) : 0;
        byte* nibbles = stackalloc byte[GroupCodes.Int4Bytes];
        int storedBytes = job.Type.BlockBytes();
        int perStored = job.Type.BlockSize() / BlockSize; // 32-value blocks per stored block
        int chunks = q8 ? 8 : 4;
        int header = HeaderBytes(job.Type);
        long stride = header + (chunks * 32);
        for (int g = start; g < end; g++)
        {
            byte* group = job.Destination + (g * job.GroupStride);
            for (int r = 0; r < GroupRows; r++)
            {
                int row = (g * GroupRows) + r;
                if (row >= job.Rows)
                {
                    break; // padding stays zero: zero scales and quants
                }

                byte* source = job.Source + (row * job.SourceRowBytes);
                for (int b = 0; b < job.Blocks; b++)
                {
                    // The stored block holding these 32 values: d (and m), then its quants.
                    byte* head = source + ((long)(b / perStored) * storedBytes);
                    byte* quants = minimum ? head + 4 + (codeBytes * (b % perStored)) : head + 2;
                    if (int3)
                    {
                        GroupCodes.Int3ToNibbles(new ReadOnlySpan<byte>(quants, GroupCodes.Int3Bytes), new Span<byte>(nibbles, GroupCodes.Int4Bytes));
                        quants = nibbles;
                    }

                    byte* destination = group + (b * stride);
                    ((ushort*)destination)[r] = Unsafe.ReadUnaligned<ushort>(head);
                    if (minimum)
                    {
                        ((ushort*)destination)[GroupRows + r] = Unsafe.ReadUnaligned<ushort>(head + 2);
                    }

                    for (int c = 0; c < chunks; c++)
                    {
                        Unsafe.WriteUnaligned(destination + header + (32 * c) + (4 * r), Unsafe.ReadUnaligned<int>(quants + (4 * c)));
                    }
                }
            }
        }

        // The rows are copied: a mapped file's pages go back (a few at the range's edges stay), so the resident set
        // never holds two copies of a large matrix.
        if (job.ReleaseSource)
        {
            long first = (long)start * GroupRows, last = Math.Min((long)end * GroupRows, job.Rows);
            MappedFile.ReleasePages(job.Source + (first * job.SourceRowBytes), (last - first) * job.SourceRowBytes);
        }
    }
}
