"""ADE20K-150 (SceneParsing) class names and the colour palette its tools use for label maps.

`CLASS_NAMES[i]` is the name of channel `i` of `Segmenter.sem_seg` (0-based; the data set's label
files store `i + 1`, with 0 for "unlabelled"). `PALETTE[i]` is the RGB colour of class `i` in the
palette the ADE20K benchmark tools and most segmentation toolboxes draw with, so label maps written
here look like everybody else's.
"""
from __future__ import annotations

import numpy as np

# index, colour (hex RGB), name
_TABLE = """
  0 787878 wall
  1 b47878 building
  2 06e6e6 sky
  3 503232 floor
  4 04c803 tree
  5 787850 ceiling
  6 8c8c8c road
  7 cc05ff bed
  8 e6e6e6 windowpane
  9 04fa07 grass
 10 e005ff cabinet
 11 ebff07 sidewalk
 12 96053d person
 13 787846 earth
 14 08ff33 door
 15 ff0652 table
 16 8fff8c mountain
 17 ccff04 plant
 18 ff3307 curtain
 19 cc4603 chair
 20 0066c8 car
 21 3de6fa water
 22 ff0633 painting
 23 0b66ff sofa
 24 ff0747 shelf
 25 ff09e0 house
 26 0907e6 sea
 27 dcdcdc mirror
 28 ff095c rug
 29 7009ff field
 30 08ffd6 armchair
 31 07ffe0 seat
 32 ffb806 fence
 33 0aff47 desk
 34 ff290a rock
 35 07ffff wardrobe
 36 e0ff08 lamp
 37 6608ff bathtub
 38 ff3d06 railing
 39 ffc207 cushion
 40 ff7a08 base
 41 00ff14 box
 42 ff0829 column
 43 ff0599 signboard
 44 0633ff chest of drawers
 45 eb0cff counter
 46 a09614 sand
 47 00a3ff sink
 48 8c8c8c skyscraper
 49 fa0a0f fireplace
 50 14ff00 refrigerator
 51 1fff00 grandstand
 52 ff1f00 path
 53 ffe000 stairs
 54 99ff00 runway
 55 0000ff case
 56 ff4700 pool table
 57 00ebff pillow
 58 00adff screen door
 59 1f00ff stairway
 60 0bc8c8 river
 61 ff5200 bridge
 62 00fff5 bookcase
 63 003dff blind
 64 00ff70 coffee table
 65 00ff85 toilet
 66 ff0000 flower
 67 ffa300 book
 68 ff6600 hill
 69 c2ff00 bench
 70 008fff countertop
 71 33ff00 stove
 72 0052ff palm
 73 00ff29 kitchen island
 74 00ffad computer
 75 0a00ff swivel chair
 76 adff00 boat
 77 00ff99 bar
 78 ff5c00 arcade machine
 79 ff00ff hovel
 80 ff00f5 bus
 81 ff0066 towel
 82 ffad00 light
 83 ff0014 truck
 84 ffb8b8 tower
 85 001fff chandelier
 86 00ff3d awning
 87 0047ff streetlight
 88 ff00cc booth
 89 00ffc2 television receiver
 90 00ff52 airplane
 91 000aff dirt track
 92 0070ff apparel
 93 3300ff pole
 94 00c2ff land
 95 007aff bannister
 96 00ffa3 escalator
 97 ff9900 ottoman
 98 00ff0a bottle
 99 ff7000 buffet
100 8fff00 poster
101 5200ff stage
102 a3ff00 van
103 ffeb00 ship
104 08b8aa fountain
105 8500ff conveyer belt
106 00ff5c canopy
107 b800ff washer
108 ff001f plaything
109 00b8ff swimming pool
110 00d6ff stool
111 ff0070 barrel
112 5cff00 basket
113 00e0ff waterfall
114 70e0ff tent
115 46b8a0 bag
116 a300ff minibike
117 9900ff cradle
118 47ff00 oven
119 ff00a3 ball
120 ffcc00 food
121 ff008f step
122 00ffeb tank
123 85ff00 trade name
124 ff00eb microwave
125 f500ff pot
126 ff007a animal
127 fff500 bicycle
128 0abed4 lake
129 d6ff00 dishwasher
130 00ccff screen
131 1400ff blanket
132 ffff00 sculpture
133 0099ff hood
134 0029ff sconce
135 00ffcc vase
136 2900ff traffic light
137 29ff00 tray
138 ad00ff ashcan
139 00f5ff fan
140 4700ff pier
141 7a00ff crt screen
142 00ffb8 plate
143 005cff monitor
144 b8ff00 bulletin board
145 0085ff shower
146 ffd600 radiator
147 19c2c2 glass
148 66ff00 clock
149 5c00ff flag
"""

_ROWS = [line.split(" ", 2) for line in _TABLE.strip().splitlines() for line in [line.strip()]]
CLASS_NAMES: tuple[str, ...] = tuple(name for _, _, name in _ROWS)
PALETTE: np.ndarray = np.array([[int(c[i:i + 2], 16) for i in (0, 2, 4)] for _, c, _ in _ROWS], np.uint8)
PALETTE.setflags(write=False)
NUM_CLASSES = len(CLASS_NAMES)
assert NUM_CLASSES == 150 and [int(i) for i, _, _ in _ROWS] == list(range(150))
